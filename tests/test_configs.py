"""Every config file composes and resolves; the documented compositions work from the command line."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT, compose_config

GROUPS_REQUIRED = {
    "model": None,
    "data": None,
    "loss": None,
    "optim": None,
    "scheduler": None,
    "evals": None,
    "callbacks": None,
    "logger": {"wandb", "csv", "tensorboard", "none"},
    "trainer": {"cpu", "gpu", "ddp", "fsdp", "deepspeed"},
    "paths": None,
    "hydra": None,
    "experiment": None,
    "debug": None,
    "distill": {"none", "clip"},
    "ema": {"none", "default"},
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", sorted(GROUPS_REQUIRED))
def test_config_group_exists(group):
    found = set(options(group))
    assert found, f"conf/{group}/ has no options"
    assert GROUPS_REQUIRED[group] is None or GROUPS_REQUIRED[group] <= found


SWAPPABLE = [
    "model",
    "data",
    "loss",
    "lora",
    "optim",
    "scheduler",
    "logger",
    "trainer",
    "debug",
    "experiment",
    "evals",
    "lock",
    "distill",
    "ema",
]


@pytest.mark.parametrize(
    "override", [f"{group}={name}" for group in SWAPPABLE for name in options(group) if group != "hydra"]
)
def test_every_option_composes_and_resolves(override, tmp_path):
    cfg = compose_config([override], output_dir=tmp_path)
    OmegaConf.resolve(cfg)  # raises on any broken interpolation
    assert cfg.model._target_.endswith("CLIP")


def test_model_image_size_reaches_tower_and_data(tmp_path):
    cfg = compose_config(["model.image_size=96"], output_dir=tmp_path)
    assert cfg.model.image_tower.image_size == 96
    assert cfg.data.image_size == 96


def run_train(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python src/train.py ARGS`, its run folder (if it gets that far) in a temporary root, not the clone's logs/."""
    with tempfile.TemporaryDirectory() as root:
        return subprocess.run(
            [sys.executable, str(ROOT / "src" / "train.py"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**__import__("os").environ, "WANDB_MODE": "offline", "CLIPLAB_ROOT": root},
        )


def test_documented_big_run_prints_resolved_config():
    result = run_train("model=vit_l14", "data=laion", "trainer.devices=8", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.model.image_tower.model_name == "vit_large_patch14_clip_224"
    assert cfg.trainer.devices == 8


def test_documented_big_run_fails_fast_with_one_line(tmp_path):
    missing = tmp_path / "no-laion" / "{00000..00009}.tar"
    result = run_train("model=vit_l14", "data=laion", "trainer.devices=8", f"data.train.urls='{missing}'")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert str(Path(missing).parent) in lines[0] and "data.train.urls" in lines[0]


def test_unknown_model_lists_choices():
    result = run_train("model=vit_z99", "--cfg", "job")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "vit_b32" in result.stderr and "tiny" in result.stderr


def test_multirun_without_experiment_resolves_its_sweep_dir(tmp_path, emoji_ready):
    """The sweeper resolves hydra.sweep.dir before any job exists: paths must not need `${hydra:...}`."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "data=emoji",
            "debug=fast",
            "logger=csv",
            "seed=1,2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "CLIPLAB_ROOT": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "logs" / "train" / "multiruns").glob("*/*") if p.is_dir())
    assert jobs == [
        "data=emoji,debug=fast,seed=1",
        "data=emoji,debug=fast,seed=2",
    ]  # named from their overrides
