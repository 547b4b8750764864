"""Every config of a group checked against its contract in code, the way timm's tests/test_models.py runs
every registered model: each YAML in conf/model/image_tower/, conf/model/text_tower/, conf/model/tokenizer/,
conf/loss/ and conf/data/ (bases, `_*.yaml`, excepted) is built and held to the protocol it names
(`cliplab.models.interfaces`, `cliplab.losses.interface`, `cliplab.data.interface`). A new YAML is picked
up without editing this file; a new tower class or tokenizer needs one entry in a table below (the test
says which), a new data config one entry pointing it at the tiny data.
"""

import pickle
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from cliplab.data.interface import DataSource
from cliplab.data.shards import write_shards_from_table
from cliplab.losses.interface import Loss
from cliplab.models.build import build_tokenizer
from cliplab.models.interfaces import ImageTower, TextTower, Tokenizer
from tests._tiny_bert import hf_tower_overrides, save_tiny_bert_tokenizer
from tests.conftest import CONF, compose_config

TEXTS = ["a photo of a cat", "", "a very long caption " * 30, "naïve café 😀 日本語"]


def options(group: str) -> list[str]:
    """A group's options; files starting with `_` are the bases its options compose, not options."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def model_cfg(*overrides: str, name: str = "tiny") -> DictConfig:
    """A named model's config, composed by Hydra as a run composes it (`${..x}` resolve in place)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=f"model/{name}", overrides=list(overrides)).model


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory) -> Path:
    return save_tiny_bert_tokenizer(tmp_path_factory.mktemp("tiny_bert"))


def with_tiny_hf(model: DictConfig, tiny_hf_dir: Path) -> DictConfig:
    """HF towers: no hub offline, so a tiny encoder from config and a vocabulary saved in tmp_path (the
    tokenizer reads the tower's model_name_or_path)."""
    if model.text_tower._target_.startswith("cliplab.models.hf_text_tower."):
        for key, value in hf_tower_overrides(tiny_hf_dir).items():
            model.text_tower[key] = value
    return model


# ---- image towers ----


@pytest.mark.parametrize("name", options("model/image_tower"))
def test_image_tower_contract(name):
    """Built on the meta device, so every config (ViT-L and RN50x64 included) is checked in milliseconds."""
    cfg = model_cfg(f"model/image_tower={name}", "model.image_size=224", "model.embed_dim=256").image_tower
    with torch.device("meta"):
        tower = instantiate(cfg, _convert_="object")
        out = tower(torch.empty(2, 3, 224, 224))
    assert isinstance(tower, ImageTower)
    assert tower.output_dim == 256 and out.shape == (2, 256)
    params = dict(tower.named_parameters())
    assert tower.no_weight_decay() <= set(params)
    blocks = tower.block_classes()
    assert blocks and all(any(isinstance(m, cls) for m in tower.modules()) for cls in blocks)
    tower.set_grad_checkpointing(True)
    tower.set_grad_checkpointing(False)

    groups = tower.param_groups()
    assert sorted(n for g in groups for n in g) == sorted(params)  # every parameter in exactly one group
    tower.lock(unlocked_groups=1)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == set(groups[-1])
    tower.lock()
    assert not any(p.requires_grad for p in tower.parameters())


# ---- text towers (each with the tokenizer its base picks) ----

# Settings that make a tower small enough to run a forward pass in a test, by target class.
_SHRINK = {
    "cliplab.models.text_tower.CLIPTextTower": {"width": 64, "heads": 4, "layers": 2},
    "cliplab.models.hf_text_tower.HFTextTower": {},  # built from a tiny config (see with_tiny_hf)
}


def text_model(name: str, tiny_hf_dir: Path, **overrides) -> DictConfig:
    model = model_cfg(f"model/text_tower={name}", "model.embed_dim=48", "model.context_length=16")
    model = with_tiny_hf(model, tiny_hf_dir)
    for key, value in overrides.items():
        model.text_tower[key] = value
    return model


@pytest.mark.parametrize("name", options("model/text_tower"))
def test_text_tower_contract(name, tiny_hf_dir):
    model = text_model(name, tiny_hf_dir)
    node = model.text_tower
    assert node.embed_dim == 48 and node.context_length == 16
    assert "tokenizer" not in node and model.tokenizer.context_length == 16  # beside the towers
    assert node._target_ in _SHRINK, "add shrink settings for this tower class"

    tokenizer = build_tokenizer(model)
    assert isinstance(tokenizer, Tokenizer)
    tokens = tokenizer(TEXTS)
    assert tokens.dtype == torch.long and tokens.shape == (len(TEXTS), 16)
    assert isinstance(tokenizer.pad_token_id, int) and tokenizer.vocab_size > 0
    assert tokenizer.eot_token_id is None or isinstance(tokenizer.eot_token_id, int)

    # The full-size tower is only built on the meta device (no memory, no compute).
    with torch.device("meta"):
        full = instantiate(node)
    assert isinstance(full, TextTower) and full.output_dim == 48

    small = instantiate(text_model(name, tiny_hf_dir, **_SHRINK[node._target_]).text_tower)
    out = small(tokens)
    assert out.shape == (len(TEXTS), small.output_dim) and torch.isfinite(out).all()
    names = {n for n, _ in small.named_parameters()}
    assert small.no_weight_decay() <= names
    assert any(isinstance(m, small.block_classes()) for m in small.modules())
    small.set_grad_checkpointing(True)
    small.train()
    small(tokens).sum().backward()
    small.lock(unlocked_groups=0, freeze_norm_stats=True)
    assert not any(p.requires_grad for p in small.parameters())


# ---- tokenizers ----

# The text tower each tokenizer serves (the tokenizer reads its settings, e.g. the HF model's files).
_TOKENIZER_TOWER = {"clip": "clip_tiny", "hf": "bert_base"}


@pytest.mark.parametrize("name", options("model/tokenizer"))
def test_tokenizer_contract(name, tiny_hf_dir):
    assert name in _TOKENIZER_TOWER, "name the text tower this tokenizer serves in _TOKENIZER_TOWER"
    overrides = [f"model/text_tower={_TOKENIZER_TOWER[name]}", f"model/tokenizer={name}"]
    model = with_tiny_hf(model_cfg(*overrides, "model.context_length=16"), tiny_hf_dir)
    tokenizer = build_tokenizer(model)
    assert isinstance(tokenizer, Tokenizer) and tokenizer.context_length == 16

    tokens = tokenizer(TEXTS)
    assert tokens.dtype == torch.long and tokens.shape == (len(TEXTS), 16)
    assert tokenizer("a cat").shape == (1, 16) and tokenizer(TEXTS, context_length=8).shape == (4, 8)
    assert tokens.min() >= 0 and tokens.max() < tokenizer.vocab_size
    for row in tokens:
        content = row != tokenizer.pad_token_id
        # padding only trails (what trim_padding cuts), and a cut row still ends in its EOT
        assert content[: int(content.sum())].all()
        if tokenizer.eot_token_id is not None:
            assert row[int(content.sum()) - 1] == tokenizer.eot_token_id
    # the loader workers receive it pickled
    assert torch.equal(pickle.loads(pickle.dumps(tokenizer))(TEXTS), tokens)


@pytest.mark.parametrize("name", options("model"))
def test_named_model_composes_with_its_tokenizer(name):
    model = model_cfg(name=name)
    tokenizer = build_tokenizer(model)
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.context_length == model.text_tower.context_length == model.context_length
    assert tokenizer.vocab_size == model.text_tower.get("vocab_size", tokenizer.vocab_size)


# ---- losses ----


def _loss_inputs(n: int = 6, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64) + image, dim=-1)
    return image, text, torch.tensor(10.0, dtype=torch.float64)


@pytest.mark.parametrize("name", options("loss"))
def test_loss_contract(name, tmp_path):
    loss_fn = instantiate(compose_config([f"loss={name}"], output_dir=tmp_path).loss)
    assert isinstance(loss_fn, Loss)
    kind = type(loss_fn)
    assert isinstance(kind.contrastive, bool) and isinstance(kind.needs_logit_bias, bool)  # declared
    image, text, scale = _loss_inputs()
    bias = torch.tensor(-5.0, dtype=torch.float64) if kind.needs_logit_bias else None

    leaves = [image.clone().requires_grad_(), text.clone().requires_grad_(), scale.clone().requires_grad_()]
    value = loss_fn(*leaves, bias)
    assert value.shape == () and torch.isfinite(value)
    grads = torch.autograd.grad(value, leaves)
    assert all(torch.isfinite(g).all() for g in grads) and grads[0].abs().sum() > 0

    # `contrastive` is what the value does: it couples the batch's samples (each sample's loss alone
    # differs), which is why plain gradient accumulation is refused for it.
    with torch.no_grad():
        whole = loss_fn(image, text, scale, bias)
        alone = torch.stack([loss_fn(image[i : i + 1], text[i : i + 1], scale, bias) for i in range(6)])
    assert kind.contrastive == (not torch.allclose(whole, alone.mean()))
    # `needs_logit_bias`: the value depends on the bias; a loss without one runs on a model without one
    if kind.needs_logit_bias:
        assert not torch.allclose(whole, loss_fn(image, text, scale, torch.zeros_like(bias)))


# ---- data sources ----


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Eight captioned images as a folder, a CSV table, webdataset shards, and an emoji-like cache."""
    root = tmp_path_factory.mktemp("tiny_data")
    for i in range(8):
        Image.new("RGB", (30, 30), (i * 20, 0, 0)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"red {i}")
    table = pd.DataFrame({"image": [f"{i}.png" for i in range(8)], "caption": [f"red {i}" for i in range(8)]})
    table.to_csv(root / "t.csv", index=False)
    write_shards_from_table(root / "t.csv", root / "shards", samples_per_shard=4)
    for split in ("train", "val"):  # the layout of `cliplab.data.emoji` (data=emoji reads only the shards)
        write_shards_from_table(root / "t.csv", root / "emoji" / "shards" / split, samples_per_shard=4)
    return root


# How each data config is pointed at the tiny data: overrides, and environment variables it reads.
_TINY_DATA = {
    "csv": (["data.train.path={root}/t.csv"], {}),
    "folder": (["data.train.root={root}"], {}),
    "emoji": (["paths.emoji_dir={root}/emoji"], {}),
    "mix": (["paths.mix_dir={root}/emoji", "paths.emoji_dir={root}/emoji"], {}),  # its val split is emoji's
    "laion": ([], {"LAION_SHARDS": "{root}/shards"}),
    "cc3m": ([], {"CC3M_SHARDS": "{root}/shards"}),
    "cc12m": ([], {"CC12M_SHARDS": "{root}/shards"}),
    "yfcc15m": ([], {"YFCC15M_SHARDS": "{root}/shards"}),
}


@pytest.mark.parametrize("name", options("data"))
def test_data_contract(name, tiny_data, monkeypatch, tmp_path):
    assert name in _TINY_DATA, "point this data config at the tiny data in _TINY_DATA"
    overrides, env = _TINY_DATA[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(root=tiny_data))
    small = ["data.batch_size=4", "data.num_workers=0", "model.image_size=32"]
    cfg = compose_config(
        [f"data={name}", *[o.format(root=tiny_data) for o in overrides], *small], output_dir=tmp_path
    )
    tokenizer = build_tokenizer(cfg.model)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)  # as cliplab.pipeline builds it
    assert isinstance(datamodule.train_source, DataSource)
    assert datamodule.val_source is None or isinstance(datamodule.val_source, DataSource)

    datamodule.setup("fit")
    loaders = [datamodule.train_dataloader()] + (
        [datamodule.val_dataloader()] if datamodule.val_source else []
    )
    for loader in loaders:
        images, tokens = next(iter(loader))
        assert (
            images.dtype == torch.float32 and images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()
        )
        assert (
            tokens.dtype == torch.long
            and tokens.shape[0] == 4
            and tokens.shape[1] <= cfg.model.context_length
        )
        # each row is the tokenized caption of a sample
        assert all(
            re.fullmatch(r"<start_of_text>red \d <end_of_text>", tokenizer.decode(row)) for row in tokens
        )
