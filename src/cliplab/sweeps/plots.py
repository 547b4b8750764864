"""Sweep figures as PNG files: error vs compute (log-log, with its power law) and loss curves."""

from pathlib import Path

import matplotlib.ticker
import numpy as np

# matplotlib's object API writes files without pyplot: no global backend is switched, so a notebook that
# imports this module keeps showing its own inline plots (and CI, SLURM need no display)
from matplotlib.figure import Figure

from cliplab.sweeps.collect import Job
from cliplab.sweeps.powerlaw import PowerLaw, fit_power_law


def short_labels(jobs: list[Job]) -> list[str]:
    """Per job, only the overrides whose values differ between jobs ("scale=s1"): full job names overlap."""
    keys = sorted({k for j in jobs for k in j.overrides})
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    if not varying:
        return [j.name for j in jobs]
    return [",".join(f"{k}={j.overrides[k]}" for k in varying if k in j.overrides) or j.name for j in jobs]


def _percent_axis(axis) -> None:
    """Readable ticks on a log axis of rates (0.2 -> 20%), also between powers of ten."""
    formatter = matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:.4g}%")
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(formatter)


def scaling_points(jobs: list[Job], metric: str) -> tuple[list[Job], np.ndarray, np.ndarray]:
    """Jobs with a positive training compute and error of `metric` (log axes), with (compute, error) arrays."""
    kept = [j for j in jobs if (j.compute or 0) > 0 and (j.error_rate(metric) or 0) > 0]
    return kept, np.array([j.compute for j in kept]), np.array([j.error_rate(metric) for j in kept])


def plot_scaling(jobs: list[Job], metric: str, path: Path) -> PowerLaw | None:
    kept, compute, error = scaling_points(jobs, metric)
    fit = fit_power_law(compute, error)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.scatter(compute, error, color="C0", zorder=3)
    for label, x, y in zip(short_labels(kept), compute, error):
        ax.annotate(label, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if fit is not None:
        grid = np.geomspace(compute.min(), compute.max(), 50)
        ax.plot(grid, fit(grid), "--", color="C1", label=f"fit: {fit}")
        ax.legend(fontsize=8)
    if len(kept):  # log axes need positive points; an empty sweep still gets a (blank) figure
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(
            0.5, 0.5, f"no finished job with a FLOP count and {metric}", ha="center", transform=ax.transAxes
        )
    ax.set_xlabel("training compute (FLOPs = FLOPs/sample x samples seen)")
    if metric.endswith("loss"):
        ax.set_ylabel(metric)
    else:
        ax.set_ylabel(f"error = 1 - {metric}")
        _percent_axis(ax.yaxis)
    ax.set_title("Scaling: error vs compute")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fit


def plot_curves(jobs: list[Job], key: str, path: Path) -> int:
    """One line per job of a logged metric against samples seen (steps x batch); returns lines drawn."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    drawn = 0
    for job, label in zip(jobs, short_labels(jobs)):
        points = job.curve(key)
        if not points:
            continue
        batch = (job.config.get("data") or {}).get("batch_size") or 1
        steps, values = zip(*points)
        ax.plot(np.array(steps) * batch, values, label=label)
        drawn += 1
    ax.set_xlabel("samples seen")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per job")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return drawn
