"""Sweeps: scale presets, idempotent jobs (skip / resume / failure record), collection, power law, report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from cliplab.sweeps import jobs as sweep_jobs
from cliplab.sweeps.collect import collect
from cliplab.sweeps.launch import sweep_command, sweep_file
from cliplab.sweeps.powerlaw import fit_power_law
from cliplab.sweeps.report import main as report_main
from cliplab.sweeps.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SCALES = sorted(p.stem for p in (ROOT / "conf" / "scale").glob("s*.yaml"))


# ---- scale presets and sweep files ----------------------------------------------------------------------


def test_scales_grow_together(cfg_factory):
    """Each step up the ladder: wider or deeper towers, more samples seen, no higher learning rate."""
    rows = []
    for scale in SCALES:
        cfg = cfg_factory(["experiment=scaling_emoji", f"scale={scale}"])
        tower = cfg.model.image_tower
        params = tower.width**2 * tower.depth
        assert cfg.model.text_tower.width == tower.width and cfg.model.text_tower.layers == tower.depth
        assert cfg.trainer.max_epochs == -1, "the run length must be max_steps"
        rows.append((params, cfg.trainer.max_steps * cfg.data.batch_size, cfg.optim.lr))
    assert len(rows) >= 4
    for (p0, n0, lr0), (p1, n1, lr1) in zip(rows, rows[1:]):
        assert p1 > p0 and n1 > n0 and lr1 <= lr0


def test_experiment_sweeps_in_a_stable_dir_with_the_recorder():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["experiment=scaling_emoji", "scale=s0"], return_hydra_config=True)
    assert "${now:" not in OmegaConf.to_yaml(cfg.hydra.sweep, resolve=False)
    assert cfg.hydra.callbacks.sweep_jobs._target_.endswith("SweepJobRecorder")
    assert cfg.logger.csv is not None, "the report needs CSV loss curves"


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_files_give_a_multirun_command(path):
    cmd = sweep_command(path, ["cluster=slurm"], python="python")
    assert cmd[:3] == ["python", "src/train.py", "-m"]
    assert f"hydra.sweep.dir=${{paths.log_dir}}/sweeps/{path.stem}" in cmd
    assert any("," in arg for arg in cmd if arg.startswith(("scale=", "optim.", "data."))), "nothing swept"
    assert cmd[-1] == "cluster=slurm"
    spec = yaml.safe_load(path.read_text())
    assert (ROOT / "conf" / "experiment" / f"{spec['experiment']}.yaml").is_file()


def test_unknown_sweep_names_the_known_ones(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="scaling_emoji"):
        sweep_file("no_such_sweep")


# ---- job start: skip, resume, W&B naming -----------------------------------------------------------------


@pytest.fixture
def job_cfg(tmp_path):
    return OmegaConf.create(
        {
            "paths": {"output_dir": str(tmp_path / "job")},
            "ckpt_path": None,
            "sweep_resume": True,
            "logger": {"wandb": {"_target_": "x", "group": None, "name": None}},
        }
    )


def test_finished_job_is_skipped(job_cfg):
    job_dir = Path(job_cfg.paths.output_dir)
    job_dir.mkdir()
    (job_dir / "metrics.json").write_text(json.dumps({"train/loss": 1.5}))
    assert sweep_jobs.start_job(job_cfg).finished == {"train/loss": 1.5}


def test_interrupted_job_resumes_from_last_ckpt(job_cfg, monkeypatch):
    monkeypatch.setattr(sweep_jobs, "_hydra_job", lambda: (True, "/logs/sweeps/demo", "scale=s1,seed=3"))
    last = Path(job_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, last)
    (last.parent / ".step_00000009.ckpt.partial").write_bytes(b"PK")  # a write that was killed: skipped
    job = sweep_jobs.start_job(job_cfg)
    assert job.finished is None and job.cfg.ckpt_path == str(last)
    assert job_cfg.ckpt_path is None  # the caller's config is not edited
    wandb = job.cfg.logger.wandb
    assert (wandb.group, wandb.name, wandb.resume) == ("demo", "scale=s1,seed=3", "allow")
    assert wandb.config == {"sweep": "demo", "scale": "s1", "seed": "3"}
    assert wandb.id == sweep_jobs.wandb_run_id(Path(job_cfg.paths.output_dir))
    status = json.loads((Path(job_cfg.paths.output_dir) / "status.json").read_text())
    assert status["status"] == "running"


def test_plain_runs_are_never_skipped_or_resumed(job_cfg):
    job_cfg.sweep_resume = None  # outside a Hydra multirun
    Path(job_cfg.paths.output_dir).mkdir()
    (Path(job_cfg.paths.output_dir) / "metrics.json").write_text("{}")
    job = sweep_jobs.start_job(job_cfg)
    assert job.finished is None and job.cfg.ckpt_path is None


# ---- power law ------------------------------------------------------------------------------------------


def test_power_law_recovers_exponent():
    compute = np.geomspace(1e12, 1e16, 6)
    error = 3.0 * compute**-0.08 * np.exp(np.random.default_rng(0).normal(0, 0.005, 6))
    fit = fit_power_law(compute, error)
    assert fit.exponent == pytest.approx(-0.08, abs=0.005) and fit.r2 > 0.95 and fit.n == 6
    assert fit(1e14) == pytest.approx(3.0 * 1e14**-0.08, rel=0.05)


def test_power_law_needs_two_distinct_points():
    assert fit_power_law([1e12], [0.5]) is None
    assert fit_power_law([1e12, 1e12], [0.5, 0.4]) is None
    assert fit_power_law([1e12, 0.0, 1e13], [0.5, 0.4, np.nan]) is None  # non-positive / nan dropped


# ---- collection and report on a synthetic sweep -------------------------------------------------------------


def tiny_model(width: int) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="model/tiny").model  # the towers compose their group's base
    cfg.embed_dim = cfg.image_tower.width = cfg.text_tower.width = width
    cfg.image_tower.depth = cfg.text_tower.layers = 1
    cfg.image_tower.num_heads = cfg.text_tower.heads = 2
    return OmegaConf.to_container(cfg, resolve=True)


def make_job(
    sweep: Path, name: str, width: int, samples: int, top1: float | None, status="completed"
) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(name.split(",")))
    config = {"model": tiny_model(width), "data": {"batch_size": 8}}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "status.json").write_text(
        json.dumps({"status": status, "error": "boom" if status == "failed" else None})
    )
    if top1 is not None:
        metrics = {
            "train/samples_seen": samples,
            "train/loss": 2.0,
            "zeroshot/emoji/top1": top1,
            "results": [],
        }
        (job / "metrics.json").write_text(json.dumps(metrics))
        (job / "csv").mkdir()
        rows = ["step,train/loss,val/loss", "0,2.5,", "1,2.2,", "1,,2.4", "2,2.0,"]
        (job / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (job / "checkpoints").mkdir()
    return job


@pytest.fixture
def fake_sweep(tmp_path):
    sweep = tmp_path / "sweeps" / "demo"
    make_job(sweep, "scale=s0", 32, 800, 0.10)
    make_job(sweep, "scale=s1", 64, 1600, 0.20)
    make_job(sweep, "scale=s2", 96, 3200, 0.35)
    make_job(sweep, "scale=s3", 128, 0, None, status="failed")
    return sweep


def test_collect_reads_every_job(fake_sweep):
    jobs = {j.name: j for j in collect(fake_sweep)}
    assert set(jobs) == {"scale=s0", "scale=s1", "scale=s2", "scale=s3"}
    s0, s1 = jobs["scale=s0"], jobs["scale=s1"]
    assert s0.overrides == {"scale": "s0"} and s0.status == "completed"
    assert s1.flops_per_sample > s0.flops_per_sample > 0
    assert s1.compute == pytest.approx(s1.flops_per_sample * 1600)
    assert s0.error_rate("zeroshot/emoji/top1") == pytest.approx(0.9)
    assert s0.curve("train/loss") == [(0, 2.5), (1, 2.2), (2, 2.0)] and s0.curve("val/loss") == [(1, 2.4)]
    assert jobs["scale=s3"].status == "failed" and jobs["scale=s3"].compute is None


def test_report_writes_table_fit_and_figures(fake_sweep, capsys):
    report = report_main([str(fake_sweep)])
    out = fake_sweep / "report"
    for name in (
        "runs.csv",
        "scaling.png",
        "loss.png",
        "val_loss.png",
        "report.md",
        "report.html",
        "fit.json",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert report.fit.n == 3 and report.fit.exponent < 0, "error falls with compute"
    md = (out / "report.md").read_text()
    assert (
        "exponent" in md and "`scale=s3` (failed)" in md and "![Error vs training compute](scaling.png)" in md
    )
    assert json.loads((out / "fit.json").read_text())["fit"]["exponent"] == pytest.approx(report.fit.exponent)
    assert "<table>" in (out / "report.html").read_text()
    assert "report written to" in capsys.readouterr().out


def test_report_headline_is_the_experiments_report_metric_and_every_metric_is_fitted(tmp_path):
    sweep = tmp_path / "named"
    for name, width, samples, group_top1 in (("scale=s0", 32, 800, 0.2), ("scale=s1", 64, 1600, 0.4)):
        job = make_job(sweep, name, width, samples, 0.01)
        config = yaml.safe_load((job / "config.yaml").read_text())
        (job / "config.yaml").write_text(yaml.safe_dump({**config, "report_metric": "zeroshot/g/top1"}))
        metrics = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps({**metrics, "zeroshot/g/top1": group_top1}))
    report = write_report(sweep)
    assert report.metric == "zeroshot/g/top1"
    assert report.fit.exponent < 0 and report.fit(1.0) == pytest.approx(report.fit.a)
    md = (sweep / "report" / "report.md").read_text()
    assert "Power law of error (1 - `zeroshot/g/top1`)" in md
    assert "| zeroshot/emoji/top1 |" in md and "| zeroshot/g/top1 |" in md, "each metric gets its own fit"
    assert (
        write_report(sweep, tmp_path / "other", metric="zeroshot/emoji/top1").metric == "zeroshot/emoji/top1"
    )


def test_report_without_flop_counts_still_writes_its_figures(tmp_path):
    job = make_job(tmp_path / "uncounted", "scale=s0", 32, 800, 0.1)
    (job / "config.yaml").write_text(yaml.safe_dump({"data": {"batch_size": 8}}))  # no model: no FLOPs
    report = write_report(tmp_path / "uncounted")
    assert report.fit is None and (report.out_dir / "scaling.png").stat().st_size > 0


def test_report_with_one_point_has_no_fit(tmp_path):
    make_job(tmp_path / "one", "scale=s0", 32, 800, 0.1)
    report = write_report(tmp_path / "one", tmp_path / "out")
    assert report.fit is None and "No power-law fit" in (tmp_path / "out" / "report.md").read_text()


def test_wandb_report_is_skipped_offline(fake_sweep, monkeypatch):
    from cliplab.sweeps.wandb_report import publish

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert "skipped" in publish(write_report(fake_sweep))


# ---- end to end: a real 3-job multirun (one job fails), rerun skips, report -------------------------------

TINY_SWEEP = [
    "experiment=scaling_emoji",
    "scale=s0",
    "logger=csv",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.precision=32-true",
    "trainer.limit_val_batches=1",
    "evals.emoji.benchmark.limit=8",
    "evals.emoji_group.benchmark.limit=8",
    "callbacks.model_summary=null",
    "trainer.max_steps=2,4,oops",  # the third job fails validation; the others must still finish
]


def run_sweep(log_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "src/train.py", "-m", *TINY_SWEEP, f"paths.log_dir={log_dir}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_sweep_end_to_end(tmp_path):
    from cliplab.data.prepare import prepare

    prepare()
    first = run_sweep(tmp_path)
    sweep = tmp_path / "sweeps" / "scaling_emoji"
    assert first.returncode != 0, "a failed job makes the sweep exit non-zero (after the others ran)"
    done = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(done) == 2, first.stderr[-3000:]
    failed = [
        p.parent.name for p in sweep.glob("*/status.json") if json.loads(p.read_text())["status"] == "failed"
    ]
    assert len(failed) == 1 and "oops" in failed[0]
    assert all((sweep / name / "checkpoints" / "last.ckpt").is_file() for name in done)
    stamps = {name: (sweep / name / "metrics.json").stat().st_mtime_ns for name in done}

    second = run_sweep(tmp_path)
    assert (second.stdout + second.stderr).count("already finished") == 2, second.stderr[-3000:]
    assert {name: (sweep / name / "metrics.json").stat().st_mtime_ns for name in done} == stamps

    report = write_report(sweep)
    assert report.fit is not None and report.fit.n == 2
    assert (report.out_dir / "loss.png").is_file()


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_recipes_compose_and_document_themselves(path, cfg_factory):
    header = path.read_text()
    assert "Command:" in header and "Hardware:" in header and "Expected:" in header
    cfg = cfg_factory([f"experiment={path.stem}"])
    assert cfg.task_name == path.stem


def test_effective_robustness_trend_recovers_a_known_slope():
    from cliplab.sweeps.robustness import fit_trend, logit, sigmoid

    x = np.linspace(0.05, 0.9, 9)
    y = sigmoid(0.7 * logit(x) - 0.4)  # held-out accuracy on a logit-linear trend
    trend = fit_trend(x, y)
    assert trend.slope == pytest.approx(0.7) and trend.intercept == pytest.approx(-0.4)
    assert trend.r2 == pytest.approx(1.0) and trend(x) == pytest.approx(y)
    assert fit_trend([0.3], [0.2]) is None and fit_trend([0.3, 0.3], [0.2, 0.25]) is None


def test_report_draws_effective_robustness_from_the_jobs(tmp_path):
    from cliplab.sweeps.robustness import HELD_OUT, IN_DISTRIBUTION, logit, sigmoid

    sweep = tmp_path / "sweep"
    for i, (width, x) in enumerate([(32, 0.2), (48, 0.4), (64, 0.6)]):
        job = make_job(sweep, f"scale=s{i}", width, 800 * (i + 1), 0.1 * (i + 1))
        metrics = json.loads((job / "metrics.json").read_text())
        bonus = 0.05 if i == 1 else 0.0  # one run above the others' trend
        metrics |= {IN_DISTRIBUTION: x, HELD_OUT: float(sigmoid(0.5 * logit(x) - 1.0)) + bonus}
        (job / "metrics.json").write_text(json.dumps(metrics))
    report = write_report(sweep)
    png = report.files["robustness.png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.files["report.md"].read_text()
    assert "## Effective robustness" in text and "](robustness.png)" in text
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| scale=")
    }
    er = {name: float(line.rstrip(" |").split(" | ")[-1]) for name, line in rows.items()}
    assert max(er, key=er.get) == "scale=s1" and er["scale=s1"] > 0 > er["scale=s0"]
    summary = json.loads(report.files["fit.json"].read_text())["robustness"]
    assert summary["in_distribution"] == IN_DISTRIBUTION and summary["trend"]["slope"] > 0.0


def test_report_without_robustness_metrics_says_so(fake_sweep):
    report = write_report(fake_sweep, metric="zeroshot/emoji/top1")
    assert "robustness.png" not in report.files
    assert "No job logged both" in report.files["report.md"].read_text()
    named = write_report(fake_sweep, in_distribution="zeroshot/emoji/top1", held_out="zeroshot/emoji/top1")
    assert (
        named.files["robustness.png"].is_file()
        and "y = `zeroshot/emoji/top1`" in named.files["report.md"].read_text()
    )
