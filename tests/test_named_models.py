"""Every named model builds (meta device) with the paper's sizes; parameter counts match open_clip's table."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cliplab.models.build import build_clip

CONF = Path(__file__).resolve().parents[1] / "conf"
NAMED = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))

# open_clip docs/model_profile.csv, in millions (total, and image tower where published).
PUBLISHED = {
    "rn50": (102.01, 38.32),
    "rn101": (119.69, None),
    "rn50x4": (178.30, None),
    "rn50x16": (290.98, None),
    "rn50x64": (623.26, None),
    "vit_b32": (151.28, 87.85),
    "vit_b16": (149.62, None),
    "vit_l14": (427.62, None),
    "vit_l14_336": (427.94, None),
}
# The paper's embedding sizes and input resolutions.
PAPER = {
    "rn50": (1024, 224),
    "rn101": (512, 224),
    "rn50x4": (640, 288),
    "rn50x16": (768, 384),
    "rn50x64": (1024, 448),
    "vit_b32": (512, 224),
    "vit_b16": (512, 224),
    "vit_l14": (768, 224),
    "vit_l14_336": (768, 336),
}


def model_cfg(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=f"model/{name}", overrides=list(overrides))
    return cfg.model


def millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


def test_paper_models_are_all_there():
    assert set(PUBLISHED) <= set(NAMED)
    assert {"tiny", "tiny_rn"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_named_model_builds_and_runs_on_meta(name):
    """Built the way training builds it (`build_clip(cfg.model)`); counts as in open_clip's table."""
    cfg = model_cfg(name)
    with torch.device("meta"):
        model = build_clip(cfg)
        images = torch.empty(2, 3, cfg.image_size, cfg.image_size)
        tokens = torch.zeros(2, cfg.context_length, dtype=torch.long)
        out = model(images, tokens)
    assert out["image_features"].shape == out["text_features"].shape == (2, cfg.embed_dim)
    if name in PAPER:
        assert (cfg.embed_dim, cfg.image_size, cfg.context_length) == (*PAPER[name], 77)
        # OpenAI weights were trained with QuickGELU; the ResNets use ReLU in the image tower.
        assert cfg.text_tower.act == "quick_gelu"
        assert cfg.image_tower.act == ("quick_gelu" if name.startswith("vit") else None)
    if name in PUBLISHED:
        total, image = PUBLISHED[name]
        assert millions(model) == pytest.approx(total, abs=0.01)
        if image is not None:
            assert millions(model.visual) == pytest.approx(image, abs=0.01)


def test_tiny_is_the_documented_default():
    cfg = model_cfg("tiny")
    assert (cfg.embed_dim, cfg.image_size, cfg.context_length) == (256, 64, 32)
    assert (cfg.image_tower.width, cfg.image_tower.depth, cfg.image_tower.num_heads) == (256, 4, 4)
    assert (cfg.text_tower.width, cfg.text_tower.layers, cfg.text_tower.heads) == (256, 4, 4)


def test_image_size_override_reaches_the_tower():
    with torch.device("meta"):
        model = build_clip(model_cfg("tiny", "model.image_size=96"))
    assert model.visual.trunk.pos_embed.shape[1] == 1 + (96 // 16) ** 2
