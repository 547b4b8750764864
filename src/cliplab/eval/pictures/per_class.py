"""Per-class zero-shot accuracy: one bar per class, best first, beside the overall top-1 and chance."""

import math
from pathlib import Path

from matplotlib.figure import Figure

from cliplab.eval.pictures.data import PerClassAccuracy

NAMED_CLASSES = 60  # up to this many classes every bar is named; beyond, the best and worst few are listed


def per_class_figure(data: PerClassAccuracy, title: str) -> Figure:
    """Bars of the classes that have images, sorted by accuracy (ties: class order)."""
    kept = [c for c, n in enumerate(data.support) if n and not math.isnan(data.accuracy[c])]
    order = sorted(kept, key=lambda c: (-data.accuracy[c], c))
    values = [data.accuracy[c] for c in order]
    many = len(order) > NAMED_CLASSES
    fig = Figure(figsize=(10 if many else max(6.0, 0.22 * len(order) + 2), 4.8))
    ax = fig.subplots()
    ax.bar(range(len(order)), values, width=1.0 if many else 0.8, color="C0")
    ax.axhline(data.top1, ls="--", color="C1", label=f"overall top-1 {data.top1:.3f}")
    ax.axhline(1 / len(data.classnames), ls=":", color="0.4", label=f"chance {1 / len(data.classnames):.3f}")
    if many:
        ax.set_xticks([])
        best = ", ".join(data.classnames[c][:18] for c in order[:5])
        worst = ", ".join(data.classnames[c][:18] for c in order[-5:])
        ax.set_xlabel(f"{len(order)} classes, best to worst (best: {best}; worst: {worst})", fontsize=7)
    else:
        ax.set_xticks(range(len(order)), [data.classnames[c][:20] for c in order], rotation=70, ha="right",
                      fontsize=7)  # fmt: skip
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("zero-shot top-1 of the class")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def draw_per_class(data: PerClassAccuracy, path: Path, title: str) -> Path:
    per_class_figure(data, title).savefig(path, dpi=120)
    return Path(path)
