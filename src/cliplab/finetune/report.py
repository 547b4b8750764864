"""The WiSE-FT retention table (markdown + json) and plot (png): one row per alpha."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def markdown_table(rows: Sequence[Mapping], task: str, benchmarks: Sequence[str]) -> str:
    """`| alpha | <task> top-1 | <bench> top-1 ... |`, in percent."""
    header = ["alpha", f"{task} top-1 (fine-tuning task)", *[f"{b} top-1 (zero-shot)" for b in benchmarks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        cells = [f"{row['alpha']:.2f}", f"{100 * row['task']['top1']:.2f} %"]
        cells += [f"{100 * row['zeroshot'][b]['top1']:.2f} %" for b in benchmarks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping], task: str, benchmarks: Sequence[str], path: Path) -> Path:
    """Accuracy against alpha: the task (solid) and each zero-shot benchmark (dashed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    alphas = [row["alpha"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(alphas, [100 * r["task"]["top1"] for r in rows], marker="o", label=f"{task} (fine-tuning task)")
    for bench in benchmarks:
        values = [100 * r["zeroshot"][bench]["top1"] for r in rows]
        ax.plot(alphas, values, marker=".", linestyle="--", label=f"{bench} (zero-shot)")
    ax.set_xlabel("alpha (0: zero-shot weights, 1: fine-tuned weights)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("WiSE-FT: weight interpolation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    rows: Sequence[Mapping], task: str, benchmarks: Sequence[str], out_dir: Path, meta: Mapping
) -> dict:
    """`wiseft.json`, `wiseft.md`, `wiseft.png` in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "wiseft.json", "md": out_dir / "wiseft.md", "png": out_dir / "wiseft.png"}
    paths["json"].write_text(json.dumps({"meta": dict(meta), "rows": list(rows)}, indent=2))
    paths["md"].write_text(markdown_table(rows, task, benchmarks))
    plot(rows, task, benchmarks, paths["png"])
    return paths
