"""Publishes a sweep report to W&B (optional): the offline report's fit and table, plus live W&B panels.

Needs an online W&B login and the `wandb-workspaces` package (`pip install wandb-workspaces`, in the dev
extra); otherwise `publish` says in one line why it skipped, and the offline report (HTML/Markdown) stands
alone. The report's runs are the sweep's W&B group (cliplab.sweeps.jobs puts every job of a sweep in one
group named after the sweep directory).
"""

from pathlib import Path

from cliplab.utils.wandb_mode import ensure_wandb_mode

DEFAULT_PROJECT = "cliplab"  # conf/logger/wandb.yaml
SAMPLES_KEY = "train/samples_seen"  # logged every step by the training module
# Cumulative training FLOPs, if the training module logs them; the scatter plot falls back to samples seen.
COMPUTE_KEY = "train/flops_seen"
LOSS_KEYS = ("train/loss", "val/loss")


def _wandb_setting(report, key: str) -> str | None:
    """`logger.wandb.<key>` as the sweep's jobs saved it in their config.yaml (the same for every job)."""
    for job in report.jobs:
        value = ((job.config.get("logger") or {}).get("wandb") or {}).get(key)
        if value:
            return str(value)
    return None


def sweep_dir(report) -> Path:
    """The sweep directory: a job's directory less its name (a path relative to the sweep)."""
    for job in report.jobs:
        parts = len(Path(job.name).parts)
        return job.dir.parents[parts - 1] if parts else job.dir
    return report.out_dir.parent  # no jobs: the default out dir is <sweep>/report


def sweep_group(report) -> str:
    return _wandb_setting(report, "group") or sweep_dir(report).name


def compute_key(report) -> str:
    return COMPUTE_KEY if any(COMPUTE_KEY in j.metrics for j in report.jobs) else SAMPLES_KEY


def build_report(wr, report, project: str, entity: str, title: str):
    """The W&B report object (not saved): one runset (the sweep's group) and its panels."""
    from wandb_workspaces import expr

    group = sweep_group(report)
    runs = wr.Runset(project=project, entity=entity, name=group, filters=[expr.Metric("Group") == group])
    x = compute_key(report)
    x_label = "training compute (FLOPs)" if x == COMPUTE_KEY else "samples seen"
    panels = [wr.LinePlot(title=key, x=SAMPLES_KEY, y=[key], title_x="samples seen") for key in LOSS_KEYS]
    panels.append(
        wr.ScatterPlot(title=f"{report.metric} vs {x_label}", x=x, y=report.metric, log_x=True, log_y=True)
    )
    fit = f"Power law: error = {report.fit}" if report.fit else "No power-law fit."
    return wr.Report(
        project=project,
        entity=entity,
        title=title,
        description=fit,
        blocks=[
            wr.MarkdownBlock(text=report.summary_markdown()),
            wr.PanelGrid(runsets=[runs], panels=panels),
        ],
    )


def publish(report, project: str | None = None, entity: str | None = None) -> str:
    """Returns the W&B report URL, or a one-line reason it was not published.

    `project`/`entity` default to the jobs' `logger.wandb` settings, then cliplab / your default entity."""
    if ensure_wandb_mode() in ("offline", "disabled"):
        return "W&B report skipped: W&B is offline (log in with `wandb login`, then rerun with --wandb)"
    try:
        import wandb
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        return "W&B report skipped: `pip install wandb-workspaces` to publish reports"
    project = project or _wandb_setting(report, "project") or DEFAULT_PROJECT
    try:
        entity = entity or _wandb_setting(report, "entity") or wandb.Api().default_entity
        w_report = build_report(wr, report, project, entity, title=f"Sweep {sweep_group(report)}")
        w_report.save()
        return f"W&B report: {w_report.url}"
    except Exception as err:  # network, auth or a missing project: the offline report still stands
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"W&B report not published: {reason}"
