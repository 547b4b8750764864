"""Data configs fail at start-up naming the setting; that every data config builds and yields batches on
tiny data is checked in tests/test_contracts.py."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def batch_from(overrides, fault_dir):
    def tokenizer(texts):
        return torch.zeros(len(texts), 8, dtype=torch.long)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):  # outside a Hydra run, a default under paths.output_dir would resolve to "None/..."
        cfg.data.fault_dir = str(fault_dir)
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_laion_without_shards_fails_at_startup_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LAION_SHARDS", f"{tmp_path}/{{00000..00009}}.tar")
    with pytest.raises(ValueError, match=r"no shards found for data\.train\.urls="):
        batch_from(["data=laion", "data.num_workers=0"], tmp_path)


@pytest.mark.parametrize(("data", "command"), [("mix", "python -m cliplab.data.mix"), ("emoji", "make data")])
def test_unbuilt_builtin_data_set_names_the_command_that_builds_it(data, command, tmp_path):
    from cliplab.pipeline import build_datamodule
    from cliplab.utils.errors import DataError

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", f"paths.cache_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.data.fault_dir = str(tmp_path / "faults")
    with pytest.raises(DataError, match=f"build this built-in data set first with `{command}`"):
        build_datamodule(cfg, tokenizer=lambda texts: torch.zeros(len(texts), 8, dtype=torch.long))
