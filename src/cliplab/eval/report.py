"""The one results layout, written by training (`test=true`) and by `src/eval.py` alike.

`results.json`: `{"produced_by": {...}, "rows": [{"metric", "value", "chance"}, ...]}`, where produced_by
says what produced the numbers (model and weights hash, and per `evals` entry its data version, prompts and
templates, preprocessing) and `pictures` (file -> caption, when any were drawn); `results.md`: the rows as a
Markdown table (the README's tables are copied from it), then the pictures beside it; the table is printed.
"""

import json
import math
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table


def result_rows(metrics: Mapping[str, float], chance: Mapping[str, float], prefixes) -> list[dict]:
    """Rows {metric, value, chance} for every metric under one of `prefixes`, sorted by name."""
    prefixes = tuple(prefixes)
    return [
        {"metric": name, "value": float(value), "chance": chance.get(name)}
        for name, value in sorted(metrics.items())
        if name.startswith(prefixes)
    ]


def _number(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def results_markdown(rows: list[dict]) -> str:
    lines = ["| metric | value | chance |", "|---|---:|---:|"]
    for row in rows:
        chance = "" if row["chance"] is None else f"{row['chance']:.4f}"
        lines.append(f"| {row['metric']} | {_number(row['value'])} | {chance} |")
    return "\n".join(lines) + "\n"


def print_results(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in ("metric", "value", "chance"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        chance = "" if row["chance"] is None else f"{row['chance']:.4f}"
        table.add_row(row["metric"], _number(row["value"]), chance)
    Console().print(table)


def write_results(
    rows: list[dict], output_dir: str | Path, produced_by: Mapping | None = None, pictures=()
) -> Path:
    """Writes results.json and results.md into `output_dir` (results.md links `pictures`, the
    cliplab.eval.pictures.write.Picture files already drawn there), prints the table; returns results.json."""
    from cliplab.eval.pictures.write import pictures_markdown

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    layout = {"produced_by": dict(produced_by or {}), "rows": rows}
    if pictures:
        layout["pictures"] = {Path(p.file).name: p.caption for p in pictures}
    json_path = output_dir / "results.json"
    json_path.write_text(json.dumps(layout, indent=2, default=str))
    (output_dir / "results.md").write_text(
        results_markdown(rows) + pictures_markdown(list(pictures), output_dir)
    )
    print_results(rows, f"Held-out results ({output_dir})")
    return json_path
