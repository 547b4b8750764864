"""Shared fixtures: composing the real Hydra configs the way `src/train.py` does."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import cliplab  # noqa: F401  (registers the `cliplab.cwd` config resolver)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tests never talk to W&B servers and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(
    overrides: list[str] = (), config_name: str = "train", output_dir: Path | None = None
) -> DictConfig:
    """The config `python src/train.py <overrides>` would run with (hydra resolvers included)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            if output_dir is not None:
                cfg.paths.output_dir = str(output_dir)
                cfg.paths.log_dir = str(output_dir)
            del cfg.hydra
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    """compose(overrides) -> config whose outputs go to a temporary directory."""

    def make(overrides: list[str] = (), config_name: str = "train") -> DictConfig:
        return compose_config(overrides, config_name, output_dir=tmp_path)

    return make


@pytest.fixture(scope="session")
def emoji_ready():
    """The default emoji data set, built into the cache once (about a minute on a fresh machine)."""
    from cliplab.data.prepare import prepare

    return prepare()
