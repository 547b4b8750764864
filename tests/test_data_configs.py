"""Every data config composes, instantiates as `instantiate(cfg.data, tokenizer=...)` and yields a batch."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from cliplab.data.shards import write_shards_from_table

CONF = Path(__file__).resolve().parents[1] / "conf"
WEBDATASET_CONFIGS = {
    "laion": "LAION_SHARDS",
    "cc3m": "CC3M_SHARDS",
    "cc12m": "CC12M_SHARDS",
    "yfcc15m": "YFCC15M_SHARDS",
}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    for i in range(8):
        Image.new("RGB", (30, 30), (i * 20, 0, 0)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"red {i}")
    pd.DataFrame({"image": [f"{i}.png" for i in range(8)], "caption": [f"red {i}" for i in range(8)]}).to_csv(
        root / "t.csv", index=False
    )
    write_shards_from_table(root / "t.csv", root / "shards", samples_per_shard=4)
    return root


def tokenizer(texts):
    return torch.zeros(len(texts), 8, dtype=torch.long)


def batch_from(overrides, fault_dir):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):  # outside a Hydra run, a default under paths.output_dir would resolve to "None/..."
        cfg.data.fault_dir = str(fault_dir)
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("name", sorted(WEBDATASET_CONFIGS))
def test_webdataset_configs(name, table, monkeypatch, tmp_path):
    monkeypatch.setenv(WEBDATASET_CONFIGS[name], str(table / "shards"))
    images, tokens = batch_from(
        [f"data={name}", "data.batch_size=4", "data.num_workers=0", "model.image_size=32"], tmp_path
    )
    assert images.shape == (4, 3, 32, 32) and tokens.shape == (4, 8)


@pytest.mark.parametrize("name,setting,value", [("csv", "path", "t.csv"), ("folder", "root", ".")])
def test_table_and_folder_configs(name, setting, value, table, tmp_path):
    overrides = [
        f"data={name}",
        f"data.train.{setting}={table / value}",
        "data.batch_size=4",
        "data.num_workers=0",
    ]
    images, _ = batch_from([*overrides, "model.image_size=32"], tmp_path)
    assert images.shape == (4, 3, 32, 32)


def test_laion_without_shards_fails_at_startup_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LAION_SHARDS", f"{tmp_path}/{{00000..00009}}.tar")
    with pytest.raises(ValueError, match=r"no shards found for data\.train\.urls="):
        batch_from(["data=laion", "data.num_workers=0"], tmp_path)
