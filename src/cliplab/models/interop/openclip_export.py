"""Write a cliplab CLIP in open_clip's native layout: `open_clip_config.json` + `open_clip_model.safetensors`.

The directory loads with `open_clip.create_model_and_transforms("local-dir:<dir>")` (or from the HF Hub
as `hf-hub:`) and `open_clip.get_tokenizer("local-dir:<dir>")`. What exports (see `openclip_towers`): image
towers that are CLIP ViTs (class-token or mean pooling), CLIP ResNets or timm models open_clip's TimmModel
rebuilds; text towers that are the CLIP transformer or a Hugging Face encoder. A Hugging Face text tower
also writes its encoder's `config.json` and tokenizer files into the directory (open_clip's
`hf_model_name` then names the directory; pass a hub id instead when the folder is to be uploaded).
"""

import json
from pathlib import Path

import torch
from torch import nn

from cliplab.models.interop.openclip_towers import (
    ExportError,
    clip_text_cfg,
    hf_text_cfg,
    is_hf_text_tower,
    vision_cfg,
)
from cliplab.models.interop.visual_keys import tower_kind, tower_to_openai_visual

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

text_cfg = clip_text_cfg  # the name the HF CLIPModel export and older callers use


def openclip_model_cfg(model: nn.Module, hf_model_name: str | None = None, tokenizer=None) -> dict:
    vcfg, vision_quick = vision_cfg(model.visual)
    if is_hf_text_tower(model.text):
        # open_clip's tokenizer pads to text_cfg.context_length: the model's, else its tokenizer's.
        context_length = getattr(model, "context_length", None) or getattr(tokenizer, "context_length", None)
        context_length = context_length or model.text.transformer.config.max_position_embeddings
        tcfg = hf_text_cfg(model.text, hf_model_name or "<export dir>", context_length)
        quick = bool(vision_quick)
    else:
        tcfg, text_quick = clip_text_cfg(model.text)
        if vision_quick is not None and vision_quick != text_quick:
            raise ExportError(
                "open_clip uses one activation for both towers; the image and text towers differ"
            )
        quick = text_quick
    cfg = dict(embed_dim=model.embed_dim, quick_gelu=quick, vision_cfg=vcfg, text_cfg=tcfg)
    if getattr(model, "logit_bias", None) is not None:
        cfg["init_logit_bias"] = float(model.logit_bias)
    return cfg


def to_openclip_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with open_clip's key names: OpenAI names for CLIP ViT / ResNet image towers and
    the CLIP text tower (flat, `CLIP`), the tower's own for timm towers (`visual.trunk.*`, `visual.head.*`,
    as `TimmModel`) and Hugging Face text towers (`text.*`, `CustomTextCLIP`)."""
    if tower_kind(model.visual) in ("vit", "rn"):
        state = tower_to_openai_visual(model.visual)
    else:
        state = {f"visual.{k}": v for k, v in model.visual.state_dict().items()}
    text_prefix = "text." if is_hf_text_tower(model.text) else ""  # OpenAI's text keys sit at top level
    state.update({f"{text_prefix}{k}": v for k, v in model.text.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    if getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = model.logit_bias.detach()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _save_tokenizer(tokenizer, out: Path) -> None:
    """An HF text tower's tokenizer files (a cliplab HFTokenizer, a transformers tokenizer or its folder)."""
    if tokenizer is None:
        raise ExportError(
            "an HF text tower exports with its tokenizer: export_openclip(..., tokenizer=<HFTokenizer>)"
        )
    if isinstance(tokenizer, str | Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    getattr(tokenizer, "tokenizer", tokenizer).save_pretrained(out)


def export_openclip(
    model: nn.Module,
    out_dir: str | Path,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    tokenizer=None,
    hf_model_name: str | None = None,
) -> Path:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `out_dir`; returns the dir.

    For a Hugging Face text tower, `tokenizer` (its HFTokenizer) is required and `hf_model_name` (default:
    the export directory) is where open_clip finds the encoder config; raises `ExportError` (one line)
    for towers open_clip cannot express.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    hf_text = is_hf_text_tower(model.text)
    model_cfg = openclip_model_cfg(model, hf_model_name or str(out.resolve()), tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    if hf_text:
        model.text.transformer.config.save_pretrained(out)
        _save_tokenizer(tokenizer, out)
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
