"""The retrieval sheet: for a few captions, the top-k images the model retrieves, the right one framed."""

import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from cliplab.eval.pictures.data import RetrievalExamples

RIGHT, WRONG, MISSED = "#1a9641", "#bbbbbb", "#d7191c"


def retrieval_sheet_figure(examples: RetrievalExamples, title: str) -> Figure:
    """One row per caption: its text, then its ranked images; the caption's own image has a thick green
    frame and a tick, so a reader sees at a glance where it was found; when the top k missed it, it is
    shown after them in a dashed red frame."""
    rows = examples.cells()
    k = max((len(r) for r in rows), default=1)
    missed = any(rank is None for rank in examples.rank_of_correct())
    columns = k + 1 + int(missed)  # a last column shows the caption's own image when the top k missed it
    fig = Figure(figsize=(2.6 + 1.3 * (columns - 1), 1.45 * max(1, len(rows)) + 0.5))
    grid = fig.add_gridspec(max(1, len(rows)), columns, width_ratios=[2.0] + [1.0] * (columns - 1))
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
        if rank is None and examples.correct[q] in examples.thumbnails:
            ax = fig.add_subplot(grid[q, columns - 1])
            ax.imshow(examples.thumbnails[examples.correct[q]], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(MISSED)
                spine.set_linestyle("--")
                spine.set_linewidth(2)
            ax.set_title("its image (missed)", fontsize=7, color=MISSED)
    fig.suptitle(f"{title} (gallery of {examples.gallery} images)", fontsize=9)
    fig.tight_layout()
    return fig


def draw_retrieval_sheet(examples: RetrievalExamples, path: Path, title: str) -> Path:
    retrieval_sheet_figure(examples, title).savefig(path, dpi=120)
    return Path(path)
