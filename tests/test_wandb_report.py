"""The W&B report of a sweep, published without a network: W&B's API object is replaced by a recorder of the
GraphQL calls wandb-workspaces makes, so its real report building and `Report.save()` run."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from cliplab.sweeps.collect import Job
from cliplab.sweeps.powerlaw import PowerLaw
from cliplab.sweeps.report import Report
from cliplab.sweeps.report import main as report_main
from cliplab.sweeps.wandb_report import publish

pytest.importorskip("wandb_workspaces")
APP_URL = "https://wandb.example"
FIT = PowerLaw(a=3.0, exponent=-0.25, r2=0.98, n=2)


class FakeGraphQL:
    """Answers the GraphQL documents Report.save() sends and records their variables."""

    def __init__(self, fail: Exception | None = None):
        self.app_url, self.fail, self.calls, self.created = APP_URL, fail, [], []

    def execute_graphql(self, query: str, variables: dict | None = None) -> dict:
        if self.fail:
            raise self.fail
        self.calls.append((query, variables))
        if "upsertView" in query:
            view = {
                "id": "VIEW42",
                "displayName": variables["displayName"],
                "spec": variables["spec"],
                "project": {"name": variables["projectName"], "entityName": variables["entityName"]},
            }
            return {"upsertView": {"view": view}}
        if "internalId" in query:
            return {"project": {"internalId": "PROJECT1"}}
        raise AssertionError(f"unexpected query {query[:60]}")

    def upserts(self) -> list[dict]:
        return [v for q, v in self.calls if "upsertView" in q]


@pytest.fixture
def graphql(monkeypatch):
    import wandb

    service = FakeGraphQL()

    class FakeApi:
        default_entity = "default-team"

        def __init__(self, *args, **kwargs):
            self._service_api = service  # the transport wandb_workspaces._graphql uses

        def projects(self, entity):
            return []

        def create_project(self, name, entity):
            service.created.append((entity, name))

    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return service


def job(name: str, samples: float, top1: float, wandb_cfg: dict | None = None, **metrics) -> Job:
    config = {"logger": {"wandb": {"project": "cliplab", "group": "demo", **(wandb_cfg or {})}}}
    return Job(
        dir=Path("sweeps/demo") / name,
        name=name,
        config=config,
        overrides={"scale": name.split("=")[-1]},
        metrics={"train/samples_seen": samples, "zeroshot/emoji/top1": top1, **metrics},
        status="completed",
        flops_per_sample=1e6,
    )


def make_report(jobs: list[Job], fit: PowerLaw | None = FIT) -> Report:
    return Report(
        out_dir=Path("sweeps/demo/report"), jobs=jobs, metric="zeroshot/emoji/top1", fit=fit, files={}
    )


def saved_spec(graphql: FakeGraphQL) -> tuple[dict, dict]:
    (upsert,) = graphql.upserts()
    return upsert, json.loads(upsert["spec"])


def grid_of(spec: dict) -> dict:
    (grid,) = [b for b in spec["blocks"] if b["type"] == "panel-grid"]
    return grid["metadata"]


def test_publish_saves_a_report_of_the_sweep_group(graphql):
    report = make_report([job("scale=s0", 800, 0.1), job("scale=s1", 1600, 0.2)])
    message = publish(report, entity="team")

    assert message == f"W&B report: {APP_URL}/team/cliplab/reports/Sweep-demo--VIEW42"
    upsert, spec = saved_spec(graphql)
    assert (upsert["entityName"], upsert["projectName"]) == ("team", "cliplab")
    assert upsert["displayName"] == "Sweep demo"
    assert "3 * C^-0.2500" in upsert["description"]

    (runset,) = grid_of(spec)["runSets"]
    assert runset["project"] == {"name": "cliplab", "entityName": "team", "id": "PROJECT1"}
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "demo", "disabled": False}
    ]

    panels = {p["config"]["chartTitle"]: p for p in grid_of(spec)["panelBankSectionConfig"]["panels"]}
    for loss in ("train/loss", "val/loss"):
        assert panels[loss]["viewType"] == "Run History Line Plot"
        assert panels[loss]["config"]["metrics"] == [loss]
        assert panels[loss]["config"]["xAxis"] == "train/samples_seen"
    (scatter,) = [p["config"] for p in panels.values() if p["viewType"] == "Scatter Plot"]
    assert scatter["xAxis"] == "summary:train/samples_seen"  # the runs log no FLOP count
    assert scatter["yAxis"] == "summary:zeroshot/emoji/top1"
    assert scatter["xAxisLogScale"] and scatter["yAxisLogScale"]

    (markdown,) = [b["content"] for b in spec["blocks"] if b["type"] == "markdown-block"]
    assert "Power law of error" in markdown and "exponent -0.2500" in markdown
    assert "| scale=s0 | completed |" in markdown and "| scale=s1 | completed |" in markdown
    assert "![" not in markdown and not markdown.startswith("#")  # no local PNGs, no second title


def test_scatter_uses_training_compute_when_runs_log_it(graphql):
    report = make_report([job("scale=s0", 800, 0.1, **{"train/flops_seen": 8e8})])
    assert publish(report, entity="team").startswith("W&B report: ")
    panels = grid_of(saved_spec(graphql)[1])["panelBankSectionConfig"]["panels"]
    (scatter,) = [p["config"] for p in panels if p["viewType"] == "Scatter Plot"]
    assert scatter["xAxis"] == "summary:train/flops_seen"
    assert "training compute" in scatter["chartTitle"]


def test_project_entity_and_group_come_from_the_runs_wandb_config(graphql):
    settings = {"project": "clip-scaling", "entity": "lab", "group": "grid-v2"}
    report = make_report([job("scale=s0", 800, 0.1, settings)], fit=None)
    assert publish(report) == f"W&B report: {APP_URL}/lab/clip-scaling/reports/Sweep-grid-v2--VIEW42"
    upsert, spec = saved_spec(graphql)
    assert upsert["description"] == "No power-law fit."
    (runset,) = grid_of(spec)["runSets"]
    assert runset["filters"]["filters"][0]["value"] == "grid-v2"
    assert runset["project"]["entityName"] == "lab"


def test_without_settings_the_group_is_the_sweep_dir_and_entity_the_default(graphql):
    bare = job("lr=0.1/scale=s0", 800, 0.1)
    bare.config = {}
    assert publish(make_report([bare])).startswith(f"W&B report: {APP_URL}/default-team/cliplab/")
    (runset,) = grid_of(saved_spec(graphql)[1])["runSets"]
    assert runset["filters"]["filters"][0]["value"] == "demo"


def test_a_failed_upload_is_one_line_reason(graphql):
    graphql.fail = ConnectionError("no route to\napi.wandb.ai")
    message = publish(make_report([job("scale=s0", 800, 0.1)]), entity="team")
    assert message == "W&B report not published: no route to api.wandb.ai"


def test_missing_wandb_workspaces_is_reported(graphql, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)  # import raises ImportError
    message = publish(make_report([job("scale=s0", 800, 0.1)]))
    assert message == "W&B report skipped: `pip install wandb-workspaces` to publish reports"
    assert graphql.calls == []


def test_report_cli_prints_the_url(graphql, tmp_path, capsys, monkeypatch):
    import cliplab.sweeps.collect as collect

    monkeypatch.setattr(collect, "flops_per_sample", lambda config: 1e6)  # no model to count here
    sweep = tmp_path / "demo"
    for name, top1 in (("scale=s0", 0.1), ("scale=s1", 0.2)):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "config.yaml").write_text(yaml.safe_dump({"data": {"batch_size": 8}}))
        metrics = {"train/samples_seen": 800 * (1 + top1), "zeroshot/emoji/top1": top1}
        (sweep / name / "metrics.json").write_text(json.dumps(metrics))
    report_main([str(sweep), "--wandb"])
    url = f"{APP_URL}/default-team/cliplab/reports/Sweep-demo--VIEW42"
    assert capsys.readouterr().out.rstrip().endswith(f"W&B report: {url}")
