"""Publishes a sweep report to W&B (optional).

Needs an online W&B login and the `wandb-workspaces` package (`pip install wandb-workspaces`); otherwise it
says why it skipped and the offline report (HTML/Markdown) stands alone.
"""

from cliplab.utils.wandb_mode import ensure_wandb_mode


def publish(report, project: str = "cliplab", entity: str | None = None) -> str:
    """Returns the W&B report URL, or a one-line reason it was skipped."""
    if ensure_wandb_mode() in ("offline", "disabled"):
        return "W&B report skipped: W&B is offline (log in with `wandb login`, then rerun with --wandb)"
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        return "W&B report skipped: `pip install wandb-workspaces` to publish reports"
    group = report.out_dir.parent.name  # the sweep's W&B group (cliplab.sweeps.jobs names it so)
    fit = f"Power law: error = {report.fit}" if report.fit else "No power-law fit."
    runs = wr.Runset(project=project, entity=entity, filters=f"Group = '{group}'")
    w_report = wr.Report(
        project=project,
        entity=entity,
        title=f"Sweep {group}",
        description=fit,
        blocks=[
            wr.MarkdownBlock(text=fit),
            wr.PanelGrid(
                runsets=[runs],
                panels=[
                    wr.LinePlot(x="train/samples_seen", y=["train/loss"]),
                    wr.ScatterPlot(x="train/samples_seen", y=report.metric, log_x=True),
                ],
            ),
        ],
    )
    w_report.save()
    return f"W&B report: {w_report.url}"
