"""Write a cliplab CLIP in open_clip's native layout: `open_clip_config.json` + `open_clip_model.safetensors`.

The directory loads with `open_clip.create_model("local-dir:<dir>")` (or from the HF Hub as `hf-hub:`).
Supported towers: a CLIP-layout ViT or a CLIP ResNet image tower, and the CLIP text tower; the weights are
written with OpenAI's key names (flat text keys, `visual.conv1`, `visual.attnpool`, ...).
"""

import json
from pathlib import Path

import torch
from torch import nn

from cliplab.models.interop.visual_keys import tower_kind, tower_to_openai_visual

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def _is_quick_gelu(module: nn.Module) -> bool:
    return type(module).__name__ == "QuickGELU"


def text_cfg(text: nn.Module) -> tuple[dict, bool]:
    """open_clip `text_cfg` of a CLIPTextTower and whether it uses QuickGELU."""
    block = text.transformer.resblocks[0]
    width = text.transformer.width
    if getattr(text, "eot_token_id", None) is not None:
        raise ValueError("open_clip's CLIP text tower pools at argmax(token id); eot_token_id must be None")
    cfg = dict(
        context_length=text.context_length,
        vocab_size=text.vocab_size,
        width=width,
        heads=block.attn.heads,
        layers=text.transformer.layers,
        mlp_ratio=block.mlp.c_fc.out_features / width,
    )
    return cfg, _is_quick_gelu(block.mlp.gelu)


def vision_cfg(visual: nn.Module) -> tuple[dict, bool | None]:
    """open_clip `vision_cfg` of a CLIP ViT / ResNet tower and whether it uses QuickGELU (None: no GELU)."""
    kind = tower_kind(visual)
    trunk = visual.trunk
    if kind == "vit":
        block = trunk.blocks[0]
        width = trunk.embed_dim
        cfg = dict(
            image_size=trunk.patch_embed.img_size[0],
            layers=len(trunk.blocks),
            width=width,
            head_width=width // block.attn.num_heads,
            patch_size=trunk.patch_embed.patch_size[0],
            mlp_ratio=block.mlp.fc1.out_features / width,
        )
        return cfg, _is_quick_gelu(block.mlp.act)
    if kind == "rn":
        grid = round((trunk.head.pos_embed.shape[0] - 1) ** 0.5)
        cfg = dict(
            image_size=grid * 32,
            layers=[len(stage) for stage in trunk.stages],
            width=trunk.stem.conv3.conv.out_channels,
        )
        return cfg, None
    raise ValueError(
        "open_clip's native layout needs a CLIP ViT (token pool, linear proj) or CLIP ResNet image tower"
    )


def openclip_model_cfg(model: nn.Module) -> dict:
    vcfg, vision_quick = vision_cfg(model.visual)
    tcfg, text_quick = text_cfg(model.text)
    if vision_quick is not None and vision_quick != text_quick:
        raise ValueError("open_clip uses one activation for both towers; the image and text towers differ")
    cfg = dict(embed_dim=model.embed_dim, quick_gelu=text_quick, vision_cfg=vcfg, text_cfg=tcfg)
    if getattr(model, "logit_bias", None) is not None:
        cfg["init_logit_bias"] = float(model.logit_bias)
    return cfg


def to_openclip_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with OpenAI / open_clip `CLIP` key names."""
    state = tower_to_openai_visual(model.visual)
    state.update(model.text.state_dict())  # the text tower already uses OpenAI names, flat at top level
    state["logit_scale"] = model.logit_scale.detach()
    if getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = model.logit_bias.detach()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def export_openclip(model: nn.Module, out_dir: str | Path, mean=OPENAI_MEAN, std=OPENAI_STD) -> Path:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `out_dir`; returns the dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = openclip_model_cfg(model)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": model_cfg["vision_cfg"]["image_size"],
            "mean": list(mean),
            "std": list(std),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    save_file(to_openclip_state_dict(model), str(out / WEIGHTS_NAME))
    return out
