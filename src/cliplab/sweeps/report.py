"""Sweep report: `python -m cliplab.sweeps.report <sweep dir>` (or `make report SWEEP=<dir>`).

Writes into `<sweep dir>/report/`: runs.csv, scaling.png (error vs training compute, log-log, fitted power
law), loss.png (train/loss curves), val_loss.png, robustness.png (effective robustness, when the jobs logged
an in-distribution and a held-out accuracy: cliplab.sweeps.robustness), report.md and report.html. Offline: it reads only the job
directories. With `--wandb` and an online W&B login it also publishes a W&B report (cliplab.sweeps.wandb_report).
"""

import argparse
import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path

from cliplab.sweeps.collect import Job, collect
from cliplab.sweeps.plots import plot_curves, plot_scaling, scaling_points, short_labels
from cliplab.sweeps.powerlaw import PowerLaw, fit_power_law
from cliplab.sweeps.robustness import HELD_OUT, IN_DISTRIBUTION, Trend, plot_robustness, robustness_points

DEFAULT_METRIC = "zeroshot/emoji/top1"
COLUMNS = ("job", "status", "flops/sample", "samples seen", "compute (FLOPs)", "train/loss", "val/loss")


@dataclass
class Report:
    out_dir: Path
    jobs: list[Job]
    metric: str
    fit: PowerLaw | None
    files: dict[str, Path]

    def summary_markdown(self) -> str:
        """The fit sentence and runs table of `report.md`, without its title or its local PNGs (for a
        W&B report, which has its own title and live panels)."""
        text = markdown(self.jobs, self.metric, self.fit, {}, title="")
        return text.split("\n", 2)[2].strip() + "\n"  # drop "# " and the blank line after it


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_rows(jobs: list[Job], metrics: list[str]) -> list[list[str]]:
    rows = []
    for job in jobs:
        row = [job.name, job.status, job.flops_per_sample, job.samples_seen, job.compute]
        row += [job.metrics.get("train/loss"), job.metrics.get("val/loss")]
        row += [job.metrics.get(m) for m in metrics]
        rows.append([_fmt(v) for v in row])
    return rows


def eval_metrics(jobs: list[Job], metric: str) -> list[str]:
    """The headline metric first, then every other zero-shot/retrieval metric any job logged."""
    names = sorted(
        {k for j in jobs for k in j.metrics if k.startswith(("zeroshot/", "retrieval/"))} - {metric}
    )
    return [metric, *names]


def metric_fits(jobs: list[Job], metric: str) -> dict[str, PowerLaw]:
    """A power law of every evaluation metric against compute, so a headline pick can be checked."""
    fits = {}
    for name in eval_metrics(jobs, metric):
        _, compute, error = scaling_points(jobs, name)
        fit = fit_power_law(compute, error)
        if fit is not None:
            fits[name] = fit
    return fits


def markdown(jobs: list[Job], metric: str, fit: PowerLaw | None, images: dict[str, str], title: str) -> str:
    metrics = eval_metrics(jobs, metric)
    header = [*COLUMNS, *metrics]
    lines = [f"# {title}", ""]
    if fit is not None:
        lines.append(
            f"Power law of error (1 - `{metric}`) vs training compute C: **{fit}**; exponent {fit.exponent:.4f}."
        )
    else:
        lines.append(f"No power-law fit: fewer than two finished jobs with `{metric}` and a FLOP count.")
    failed = [j for j in jobs if j.status in ("failed", "incomplete")]
    if failed:
        lines += ["", "Unfinished jobs: " + ", ".join(f"`{j.name}` ({j.status})" for j in failed)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(jobs, metrics)]
    fits = metric_fits(jobs, metric)
    if fits:
        lines += ["", "## Power law of every metric (error = 1 - accuracy) vs compute", ""]
        lines += ["| metric | fit | exponent | R^2 |", "|---|---|---|---|"]
        lines += [f"| {m} | {f} | {f.exponent:.4f} | {f.r2:.3f} |" for m, f in fits.items()]
    for caption, file in images.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({file})"]
    return "\n".join(lines) + "\n"


def html_page(jobs: list[Job], metric: str, fit: PowerLaw | None, images: dict[str, str], title: str) -> str:
    metrics = eval_metrics(jobs, metric)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*COLUMNS, *metrics))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in table_rows(jobs, metrics)
    )
    summary = html.escape(f"Power law: error = {fit}" if fit else "No power-law fit (fewer than two points).")
    figures = "".join(
        f"<h2>{html.escape(c)}</h2><img src='{html.escape(f)}' alt='{html.escape(c)}'>"
        for c, f in images.items()
    )
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{summary}</p>"
        f"<table><tr>{head}</tr>{body}</table>{figures}</body></html>\n"
    )


def write_runs_csv(jobs: list[Job], metric: str, path: Path) -> None:
    metrics = eval_metrics(jobs, metric)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*COLUMNS, *metrics, *sorted({k for j in jobs for k in j.overrides})])
        keys = sorted({k for j in jobs for k in j.overrides})
        for job, row in zip(jobs, table_rows(jobs, metrics)):
            writer.writerow([*row, *(job.overrides.get(k, "") for k in keys)])


def headline_metric(jobs: list[Job]) -> str:
    """The metric the sweep's experiment names (`report_metric` in its config), else DEFAULT_METRIC."""
    named = {j.config.get("report_metric") for j in jobs} - {None}
    return named.pop() if len(named) == 1 else DEFAULT_METRIC


def robustness_metrics(jobs: list[Job]) -> tuple[str, str]:
    """(in distribution, held out): the experiment's `robustness_metrics`, else the emoji defaults."""
    named = {tuple((j.config.get("robustness_metrics") or {}).get(k) for k in ("in_distribution", "held_out"))
             for j in jobs} - {(None, None)}  # fmt: skip
    x, y = named.pop() if len(named) == 1 else (None, None)
    return x or IN_DISTRIBUTION, y or HELD_OUT


def robustness_markdown(jobs: list[Job], x_metric: str, y_metric: str, trend: Trend | None) -> list[str]:
    """The effective-robustness section: the trend and each run's distance above it."""
    kept, x, y = robustness_points(jobs, x_metric, y_metric)
    lines = ["", "## Effective robustness", ""]
    if not kept:
        return lines + [f"No job logged both `{x_metric}` (in distribution) and `{y_metric}` (held out)."]
    if trend is None:
        lines.append("No trend: fewer than two jobs with different in-distribution accuracy.")
    else:
        lines.append(f"Trend fitted on logit-transformed accuracies over {len(kept)} jobs: **{trend}** "
                     f"(R^2 {trend.r2:.3f}); x = `{x_metric}`, y = `{y_metric}`.")  # fmt: skip
    lines += ["", "| job | in distribution | held out | effective robustness |", "|---|---:|---:|---:|"]
    for job, px, py in zip(kept, x, y):
        er = "" if trend is None else f"{py - float(trend(px)):+.4f}"
        lines.append(f"| {job.name} | {px:.4f} | {py:.4f} | {er} |")
    return lines + ["", "![Effective robustness: held-out vs in-distribution accuracy](robustness.png)"]


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    metric: str | None = None,
    in_distribution: str | None = None,
    held_out: str | None = None,
) -> Report:
    """Collects the sweep's jobs and writes the table, figures, Markdown and HTML; returns what it wrote.

    `metric` (error = 1 - accuracy, or a loss as is) defaults to the experiment's `report_metric`;
    `in_distribution` and `held_out`, the effective-robustness axes, to its `robustness_metrics`."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}")
    out_dir = Path(out_dir) if out_dir else sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = collect(sweep_dir)
    metric = metric or headline_metric(jobs)
    files = {"runs.csv": out_dir / "runs.csv", "scaling.png": out_dir / "scaling.png"}
    write_runs_csv(jobs, metric, files["runs.csv"])
    fit = plot_scaling(jobs, metric, files["scaling.png"])
    images = {"Error vs training compute": "scaling.png"}
    for key, file, caption in (
        ("train/loss", "loss.png", "Training loss"),
        ("val/loss", "val_loss.png", "Validation loss"),
    ):
        if plot_curves(jobs, key, out_dir / file):
            files[file], images[caption] = out_dir / file, file
    default_x, default_y = robustness_metrics(jobs)
    x_metric, y_metric = in_distribution or default_x, held_out or default_y
    trend = None
    if robustness_points(jobs, x_metric, y_metric)[0]:
        files["robustness.png"] = out_dir / "robustness.png"
        trend = plot_robustness(jobs, short_labels(jobs), x_metric, y_metric, files["robustness.png"])
        images["Effective robustness"] = "robustness.png"
    title = f"Sweep report: {sweep_dir.name}"
    files["report.md"] = out_dir / "report.md"
    plain = {c: f for c, f in images.items() if f != "robustness.png"}  # its own section below, in Markdown
    text = markdown(jobs, metric, fit, plain, title)
    files["report.md"].write_text(
        text + "\n".join(robustness_markdown(jobs, x_metric, y_metric, trend)) + "\n"
    )
    files["report.html"] = out_dir / "report.html"
    files["report.html"].write_text(html_page(jobs, metric, fit, images, title))
    summary = {"metric": metric, "jobs": len(jobs), "fit": None if fit is None else fit.__dict__,
               "robustness": {"in_distribution": x_metric, "held_out": y_metric,
                              "trend": None if trend is None else trend.__dict__}}  # fmt: skip
    files["fit.json"] = out_dir / "fit.json"
    files["fit.json"].write_text(json.dumps(summary, indent=2))
    return Report(out_dir=out_dir, jobs=jobs, metric=metric, fit=fit, files=files)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dir", help="the sweep directory (hydra.sweep.dir), e.g. logs/sweeps/scaling_emoji_small"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <sweep_dir>/report)")
    parser.add_argument(
        "--metric",
        default=None,
        help=f"accuracy (error = 1 - value) or a */loss metric (default: the experiment's report_metric, "
        f"else {DEFAULT_METRIC})",
    )
    parser.add_argument("--in-distribution", default=None,
                        help=f"effective robustness x axis (default: the experiment's robustness_metrics, "
                             f"else {IN_DISTRIBUTION})")  # fmt: skip
    parser.add_argument("--held-out", default=None, help=f"its y axis (default {HELD_OUT})")
    parser.add_argument(
        "--wandb", action="store_true", help="also publish a W&B report (online login needed)"
    )
    args = parser.parse_args(argv)
    report = write_report(args.sweep_dir, args.out, args.metric, args.in_distribution, args.held_out)
    print(report.files["report.md"].read_text())
    print(f"report written to {report.out_dir}")
    if args.wandb:
        from cliplab.sweeps.wandb_report import publish

        print(publish(report))
    return report


if __name__ == "__main__":
    main()
