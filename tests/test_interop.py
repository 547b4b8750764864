"""Parity with the real libraries: open_clip (random weights, small configs) and transformers' CLIPModel."""

import json

import open_clip
import pytest
import torch
from timm.models import byobnet, vision_transformer

from cliplab.models.clip import CLIP
from cliplab.models.image_tower import TimmImageTower
from cliplab.models.interop import (
    export_hf_clip,
    export_openclip,
    load_openclip_checkpoint,
    load_openclip_state_dict,
)
from cliplab.models.interop.visual_keys import tower_to_openai_visual
from cliplab.models.safe_load import CheckpointMismatchError
from cliplab.models.text_tower import CLIPTextTower

EMBED, TEXT = 32, dict(width=64, heads=2, layers=2)
VIT = dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
RN = dict(layers=[1, 2, 1, 1], width=16, image_size=64)  # 2 blocks in stage 2: checks block indices


def open_clip_model(vision_cfg: dict, quick_gelu: bool = False, custom_text: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    model = cls(EMBED, vision_cfg=vision_cfg, text_cfg=dict(context_length=77, **TEXT), quick_gelu=quick_gelu)
    with torch.no_grad():  # non-trivial values everywhere (open_clip inits some of these to zero)
        for name, p in model.named_parameters():
            if "bn" in name or "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
        model.logit_scale.fill_(3.0)
    return model.eval()


def cliplab_model(vision_cfg: dict, act: str = "gelu") -> CLIP:
    if isinstance(vision_cfg["layers"], list):
        image = TimmImageTower(
            "resnet50_clip",
            EMBED,
            image_size=vision_cfg["image_size"],
            layers=vision_cfg["layers"],
            width_factor=vision_cfg["width"] / 64,
        )
    else:
        width = vision_cfg["width"]
        image = TimmImageTower(
            "vit_base_patch16_clip_224",
            EMBED,
            image_size=vision_cfg["image_size"],
            width=width,
            depth=vision_cfg["layers"],
            num_heads=width // vision_cfg["head_width"],
            patch_size=vision_cfg["patch_size"],
            act=act,
        )
    text = CLIPTextTower(EMBED, context_length=77, act=act, **TEXT)
    return CLIP(image, text, EMBED).eval()


def inputs(image_size: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, image_size, image_size, generator=g)
    tokens = torch.randint(1, 49406, (3, 77), generator=g)
    tokens[:, 0] = 49406
    for row, end in enumerate((5, 20, 76)):  # EOT at varied positions, zero padding after it
        tokens[row, end] = 49407
        tokens[row, end + 1 :] = 0
    return images, tokens


def assert_same_embeddings(ours: CLIP, theirs, image_size: int):
    images, tokens = inputs(image_size)
    with torch.no_grad():
        diff_i = (ours.encode_image(images) - theirs.encode_image(images)).abs().max()
        diff_t = (ours.encode_text(tokens) - theirs.encode_text(tokens)).abs().max()
    assert diff_i <= 1e-5 and diff_t <= 1e-5, (float(diff_i), float(diff_t))


@pytest.mark.parametrize(
    "vision_cfg,quick",
    [(VIT, False), (VIT, True), (RN, True)],
    ids=["vit-gelu", "vit-quickgelu", "rn-quickgelu"],
)
def test_open_clip_weights_give_the_same_embeddings(vision_cfg, quick):
    theirs = open_clip_model(vision_cfg, quick_gelu=quick)
    ours = cliplab_model(vision_cfg, act="quick_gelu" if quick else "gelu")
    load_openclip_state_dict(ours, theirs.state_dict())
    assert_same_embeddings(ours, theirs, vision_cfg["image_size"])
    assert ours.logit_scale.item() == pytest.approx(3.0)


def test_layouts_custom_text_ddp_and_training_checkpoint(tmp_path):
    theirs = open_clip_model(VIT, custom_text=True)
    assert "text.token_embedding.weight" in theirs.state_dict()
    ddp = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    wrapped = {"epoch": 3, "name": "run", "state_dict": ddp}
    path = tmp_path / "epoch_3.pt"
    torch.save(wrapped, path)
    ours = cliplab_model(VIT)
    load_openclip_checkpoint(ours, path)
    assert_same_embeddings(ours, theirs, VIT["image_size"])


def test_reverse_visual_mapping_inverts_timms_converters():
    for cfg, convert in ((VIT, vision_transformer._convert_openai_clip), (RN, byobnet._convert_openai_clip)):
        theirs = open_clip_model(cfg)
        ours = cliplab_model(cfg)
        load_openclip_state_dict(ours, theirs.state_dict())
        exported = tower_to_openai_visual(ours.visual)
        original = {k: v for k, v in theirs.state_dict().items() if k.startswith("visual.")}
        assert set(exported) == set(original)
        assert all(torch.equal(exported[k], original[k]) for k in original)
        assert convert(original, ours.visual.trunk)  # the forward direction is timm's own


def test_image_tower_checkpoint_path_loads_the_visual_part(tmp_path):
    from safetensors.torch import save_file

    theirs = open_clip_model(VIT)
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    tower = TimmImageTower(
        "vit_base_patch16_clip_224",
        EMBED,
        image_size=32,
        width=64,
        depth=2,
        num_heads=2,
        patch_size=8,
        checkpoint_path=str(tmp_path / "clip.safetensors"),
    ).eval()
    images, _ = inputs(32)
    with torch.no_grad():
        torch.testing.assert_close(tower(images), theirs.encode_image(images), rtol=0, atol=1e-5)


def test_higher_resolution_checkpoint_resizes_position_tables():
    theirs = open_clip_model(VIT)
    ours = cliplab_model({**VIT, "image_size": 48})
    load_openclip_state_dict(ours, theirs.state_dict())
    assert ours.visual.trunk.pos_embed.shape[1] == 1 + 6 * 6
    assert ours.encode_image(torch.randn(1, 3, 48, 48)).shape == (1, EMBED)


def test_mismatch_names_keys_shapes_and_architecture():
    theirs = open_clip_model(RN)
    ours = cliplab_model(VIT)
    with pytest.raises(ValueError, match="ResNet"):
        load_openclip_state_dict(ours, theirs.state_dict())
    wider = open_clip_model({**VIT, "width": 128, "head_width": 64})
    with pytest.raises(CheckpointMismatchError) as err:
        load_openclip_state_dict(ours, wider.state_dict())
    message = str(err.value)
    assert "visual.trunk.cls_token: checkpoint (1, 1, 128) vs model (1, 1, 64)" in message
    assert "ViT width 128, 2 layers, patch 8" in message


@pytest.mark.parametrize("vision_cfg", [VIT, RN], ids=["vit", "rn"])
def test_signature_reads_the_same_architecture_from_both_layouts(vision_cfg):
    from cliplab.models.interop.identify import signature

    theirs, ours = (
        signature(open_clip_model(vision_cfg).state_dict()),
        signature(cliplab_model(vision_cfg).state_dict()),
    )
    size = vision_cfg["image_size"]
    if vision_cfg is VIT:
        expected = ("vit", 64, 2, 8, size, EMBED, TEXT["width"])
    else:
        expected = ("rn", vision_cfg["width"], tuple(vision_cfg["layers"]), None, size, EMBED, TEXT["width"])
    assert theirs == ours == expected


@pytest.mark.parametrize("vision_cfg", [VIT, RN], ids=["vit", "rn"])
def test_export_to_open_clip_round_trip(vision_cfg, tmp_path):
    ours = cliplab_model(vision_cfg, act="quick_gelu")
    load_openclip_state_dict(ours, open_clip_model(vision_cfg, quick_gelu=True, seed=5).state_dict())
    out = export_openclip(ours, tmp_path / "export")
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["quick_gelu"] is True
    theirs = open_clip.create_model(f"local-dir:{out}").eval()
    assert_same_embeddings(ours, theirs, vision_cfg["image_size"])
    again = cliplab_model(vision_cfg, act="quick_gelu")
    load_openclip_checkpoint(again, out / "open_clip_model.safetensors")
    assert_same_embeddings(again, theirs, vision_cfg["image_size"])


def test_export_to_hf_clipmodel_same_logits(tmp_path):
    from transformers import CLIPModel

    ours = cliplab_model(VIT, act="quick_gelu")
    load_openclip_state_dict(ours, open_clip_model(VIT, quick_gelu=True, seed=7).state_dict())
    hf = CLIPModel.from_pretrained(export_hf_clip(ours, tmp_path / "hf")).eval()
    images, tokens = inputs(VIT["image_size"])
    with torch.no_grad():
        out = ours(images, tokens)
        logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
        theirs = hf(input_ids=tokens, pixel_values=images).logits_per_image
    torch.testing.assert_close(theirs, logits, rtol=0, atol=1e-4)


def test_hf_export_refuses_resnets(tmp_path):
    with pytest.raises(ValueError, match="ViT"):
        export_hf_clip(cliplab_model(RN), tmp_path)
