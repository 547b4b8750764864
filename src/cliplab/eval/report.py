"""Evaluation results as `results.json` and a Markdown table `results.md` (one row per benchmark)."""

import json
import math
from collections.abc import Mapping
from pathlib import Path

PERCENT = ("top1", "top5", "mean_recall")


def _cell(key: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if key in PERCENT or "R@" in key:
        return f"{100 * value:.2f}"
    return str(value)


def markdown_table(results: Mapping[str, Mapping[str, object]]) -> str:
    """Rows = benchmarks, columns = the union of their metric names (percentages for accuracies/recalls)."""
    columns: list[str] = []
    for metrics in results.values():
        columns += [k for k in metrics if k not in columns]
    header = "| benchmark | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {name} | " + " | ".join(_cell(c, m[c]) if c in m else "" for c in columns) + " |"
        for name, m in results.items()
    ]
    return "\n".join([header, rule, *rows]) + "\n"


def write_results(results: Mapping, out_dir: str | Path, meta: Mapping | None = None) -> tuple[Path, Path]:
    """Write `results.json` ({"meta", "results"}) and `results.md`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps({"meta": dict(meta or {}), "results": results}, indent=2, default=str))
    lines = ["# Evaluation results", ""]
    lines += [f"- {k}: {v}" for k, v in (meta or {}).items()]
    lines += ["", "Accuracies and recalls in %.", "", markdown_table(results)]
    md_path.write_text("\n".join(lines))
    return json_path, md_path
