"""Effective robustness of a sweep (the CLIP paper's Figure 13): accuracy under a distribution shift against
in-distribution accuracy, one point per run, beside y = x and the trend the runs follow.

As in the paper (after Taori et al. 2020) the trend is a straight line fitted by least squares to
logit-transformed accuracies, logit(y) = slope * logit(x) + intercept, and the axes are logit-scaled so
y = x and the trend are both straight. A run's effective robustness is its held-out accuracy minus the
trend's prediction at its in-distribution accuracy.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from cliplab.sweeps.collect import Job

# The emoji sweeps' defaults: concepts never trained on (conf/evals/emoji_novel_*.yaml), drawn by the
# training styles (in distribution) and by the held-out artist (the shift): zero-shot on both.
IN_DISTRIBUTION = "zeroshot/emoji_novel_seen_styles/top5"
HELD_OUT = "zeroshot/emoji_novel_heldout_style/top5"
EPS = 1e-4  # accuracies are clipped into [EPS, 1 - EPS] before the logit


def logit(p):
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, dtype=float)))


@dataclass
class Trend:
    """logit(held out) = slope * logit(in distribution) + intercept."""

    slope: float
    intercept: float
    r2: float

    def __call__(self, x):
        return sigmoid(self.slope * logit(x) + self.intercept)

    def __str__(self) -> str:
        return f"logit(y) = {self.slope:.3g} logit(x) {'+' if self.intercept >= 0 else '-'} {abs(self.intercept):.3g}"


def fit_trend(x, y) -> Trend | None:
    """The logit-linear trend of points (x, y) in (0, 1); None with fewer than two distinct x."""
    lx, ly = logit(x), logit(y)
    if len(lx) < 2 or len(np.unique(lx)) < 2:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    spread = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1 - float((residual**2).sum()) / spread if spread > 0 else 1.0
    return Trend(float(slope), float(intercept), r2)


def robustness_points(
    jobs: list[Job], x_metric: str, y_metric: str
) -> tuple[list[Job], np.ndarray, np.ndarray]:
    """The jobs that logged both metrics (finite), with their (x, y) arrays."""

    def value(job, key):
        v = job.metrics.get(key)
        return float(v) if v is not None and math.isfinite(float(v)) else None

    kept = [j for j in jobs if value(j, x_metric) is not None and value(j, y_metric) is not None]
    return kept, np.array([value(j, x_metric) for j in kept]), np.array([value(j, y_metric) for j in kept])


def plot_robustness(
    jobs: list[Job], labels: list[str], x_metric: str, y_metric: str, path: Path
) -> Trend | None:
    """Writes the figure (points, y = x, the fitted trend); returns the trend (None: under two points).
    `labels` name the jobs (same order as `jobs`)."""
    names = dict(zip((j.name for j in jobs), labels))
    kept, x, y = robustness_points(jobs, x_metric, y_metric)
    trend = fit_trend(x, y)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    low = float(np.clip(min([*x, *y], default=0.01), EPS, 1 - EPS)) * 0.8
    high = 1 - (1 - float(np.clip(max([*x, *y], default=0.99), EPS, 1 - EPS))) * 0.8
    grid = sigmoid(np.linspace(logit(low), logit(high), 100))
    ax.plot(grid, grid, ":", color="0.4", label="y = x (no loss under the shift)")
    if trend is not None:
        ax.plot(grid, trend(grid), "--", color="C1", label=f"trend: {trend} (R^2 {trend.r2:.2f})")
    ax.scatter(x, y, color="C0", zorder=3, label="runs")
    for job, px, py in zip(kept, x, y):
        ax.annotate(
            names.get(job.name, job.name), (px, py), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.5, not the logit scale's 1/2
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"in distribution: {x_metric}")
    ax.set_ylabel(f"held out: {y_metric}")
    ax.set_title(
        "Effective robustness (logit axes)" if len(kept) else "no run logged both metrics", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return trend
