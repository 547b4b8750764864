"""The training and validation loss against samples seen: does the run still learn, does it overfit."""

from pathlib import Path

from matplotlib.figure import Figure

from cliplab.eval.pictures.data import LossCurves


def loss_curves_figure(curves: LossCurves, title: str) -> Figure:
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    if curves.train:
        samples, losses = zip(*curves.train)
        ax.plot(samples, losses, color="C0", lw=1, label="training loss (logging steps)")
    if curves.val:
        samples, losses = zip(*curves.val)
        ax.plot(samples, losses, color="C1", marker="o", lw=1.5, label="validation loss (held-out pairs)")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("contrastive loss")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def draw_loss_curves(curves: LossCurves, path: Path, title: str) -> Path:
    loss_curves_figure(curves, title).savefig(path, dpi=120)
    return Path(path)
