"""The retrieval sheet: for a few captions, the top-k images the model retrieves, the right one framed."""

import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from cliplab.eval.pictures.data import RetrievalExamples

RIGHT, WRONG = "#1a9641", "#bbbbbb"


def retrieval_sheet_figure(examples: RetrievalExamples, title: str) -> Figure:
    """One row per caption: its text, then its ranked images; the caption's own image has a thick green
    frame and a tick, so a reader sees at a glance where (and whether) it was found."""
    rows = examples.cells()
    k = max((len(r) for r in rows), default=1)
    fig = Figure(figsize=(2.6 + 1.3 * k, 1.45 * max(1, len(rows)) + 0.5))
    grid = fig.add_gridspec(max(1, len(rows)), k + 1, width_ratios=[2.0] + [1.0] * k)
    for q, (caption, row, rank) in enumerate(zip(examples.captions, rows, examples.rank_of_correct())):
        text = fig.add_subplot(grid[q, 0])
        text.axis("off")
        found = f"right image: #{rank}" if rank else f"right image not in the top {len(row)}"
        text.text(0, 0.5, "\n".join(textwrap.wrap(caption, 28)[:4]) + f"\n({found})", fontsize=7,
                  va="center", ha="left", transform=text.transAxes)  # fmt: skip
        for r, (index, right) in enumerate(row):
            ax = fig.add_subplot(grid[q, r + 1])
            if index in examples.thumbnails:
                ax.imshow(examples.thumbnails[index], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(RIGHT if right else WRONG)
                spine.set_linewidth(4 if right else 0.8)
            ax.set_title(("\u2713 " if right else "") + f"#{r + 1}", fontsize=7,
                         color=RIGHT if right else "black")  # fmt: skip
    fig.suptitle(f"{title} (gallery of {examples.gallery} images)", fontsize=9)
    fig.tight_layout()
    return fig


def draw_retrieval_sheet(examples: RetrievalExamples, path: Path, title: str) -> Path:
    retrieval_sheet_figure(examples, title).savefig(path, dpi=120)
    return Path(path)
