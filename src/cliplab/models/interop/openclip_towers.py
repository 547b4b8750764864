"""open_clip's `vision_cfg` / `text_cfg` for each cliplab tower open_clip can rebuild, or why it cannot.

Image towers: a CLIP-layout ViT (class-token or mean pooling) and a CLIP ResNet become open_clip's own
VisionTransformer / ModifiedResNet; any other timm tower becomes open_clip's `TimmModel` when that wrapper
builds the same network (checked here by building it and comparing features). Text towers: the CLIP
transformer, or a Hugging Face encoder (`hf_model_name`, open_clip's HFTextEncoder).
"""

import torch
from torch import nn

from cliplab.models.interop.visual_keys import tower_kind, vit_pooling
from cliplab.utils.errors import CliplabError


class ExportError(CliplabError, ValueError):
    """The model has no form in the target library; the message says which part and why."""


def _is_quick_gelu(module: nn.Module) -> bool:
    return type(module).__name__ == "QuickGELU"


def is_hf_text_tower(text: nn.Module) -> bool:
    from cliplab.models.hf_text_tower import HFTextTower

    return isinstance(text, HFTextTower)


def clip_text_cfg(text: nn.Module) -> tuple[dict, bool]:
    """open_clip `text_cfg` of a CLIPTextTower and whether it uses QuickGELU."""
    block = text.transformer.resblocks[0]
    width = text.transformer.width
    if getattr(text, "eot_token_id", None) is not None:
        raise ExportError("open_clip's CLIP text tower pools at argmax(token id); eot_token_id must be None")
    cfg = dict(
        context_length=text.context_length,
        vocab_size=text.vocab_size,
        width=width,
        heads=block.attn.heads,
        layers=text.transformer.layers,
        mlp_ratio=block.mlp.c_fc.out_features / width,
    )
    return cfg, _is_quick_gelu(block.mlp.gelu)


# cliplab pooler -> open_clip `hf_pooler_type`; `max` and `last` have no working open_clip counterpart.
_HF_POOLERS = {
    "mean": "mean_pooler",
    "cls": "cls_pooler",
    "cls_last_hidden_state": "cls_last_hidden_state_pooler",
}
_HF_PROJ = {"linear": "linear", "mlp": "mlp", "none": None}


def hf_text_cfg(text: nn.Module, hf_model_name: str, context_length: int) -> dict:
    """open_clip `text_cfg` of an HFTextTower whose encoder config and tokenizer live at `hf_model_name`."""
    if text.pooler not in _HF_POOLERS:
        why = {"max": "its max_pooler fails on its own integer mask"}.get(
            text.pooler, "it has no such pooler"
        )
        raise ExportError(f"open_clip's HFTextEncoder cannot pool by {text.pooler!r} ({why})")
    return dict(
        hf_model_name=hf_model_name,
        hf_tokenizer_name=hf_model_name,
        hf_model_pretrained=False,
        hf_pooler_type=_HF_POOLERS[text.pooler],
        hf_proj_type=_HF_PROJ[text.proj_type],
        context_length=context_length,
        vocab_size=text.transformer.config.vocab_size,
    )


def vision_cfg(visual: nn.Module) -> tuple[dict, bool | None]:
    """open_clip `vision_cfg` of an image tower and whether it uses QuickGELU (None: no say, e.g. timm)."""
    kind = tower_kind(visual)
    trunk = visual.trunk
    if kind == "vit":
        block = trunk.blocks[0]
        width = trunk.embed_dim
        pool_type, ln_after_pool = vit_pooling(visual)
        cfg = dict(
            image_size=trunk.patch_embed.img_size[0],
            layers=len(trunk.blocks),
            width=width,
            head_width=width // block.attn.num_heads,
            patch_size=trunk.patch_embed.patch_size[0],
            mlp_ratio=block.mlp.fc1.out_features / width,
        )
        if pool_type != "tok":
            cfg.update(pool_type=pool_type, final_ln_after_pool=ln_after_pool)
        return cfg, _is_quick_gelu(block.mlp.act)
    if kind == "rn":
        grid = round((trunk.head.pos_embed.shape[0] - 1) ** 0.5)
        cfg = dict(
            image_size=grid * 32,
            layers=[len(stage) for stage in trunk.stages],
            width=trunk.stem.conv3.conv.out_channels,
        )
        return cfg, None
    return timm_vision_cfg(visual), None


# Regularisation rates change training only; an exported model is for inference (open_clip: timm_drop*).
_TRAINING_ONLY = {"drop_rate", "drop_path_rate", "proj_drop_rate", "attn_drop_rate", "patch_drop_rate"}


def timm_vision_cfg(visual: nn.Module) -> dict:
    """open_clip `TimmModel` settings for a timm tower, checked by building that TimmModel, loading the
    tower's weights into it (strict) and comparing features on a random batch."""
    from cliplab.models.image_tower import _CNN_POOL, _VIT_POOL, TimmImageTower

    if not isinstance(visual, TimmImageTower):
        raise ExportError(f"open_clip cannot express a {type(visual).__name__} image tower")
    extra = sorted(set(getattr(visual, "timm_kwargs", {})) - _TRAINING_ONLY)
    if extra:
        raise ExportError(
            f"open_clip's TimmModel passes no timm.create_model arguments; this tower sets {extra}"
        )
    if hasattr(visual.head, "pool"):
        raise ExportError("open_clip's TimmModel has no attention pool of cliplab's layout (pool=attn)")
    timm_pool = (_VIT_POOL if visual.family == "vit" else _CNN_POOL)[visual.pool]
    proj = visual.proj_type
    cfg = dict(
        timm_model_name=visual.model_name,
        timm_model_pretrained=False,
        timm_pool=timm_pool,
        timm_proj=proj,
        timm_proj_bias=proj == "mlp",  # cliplab's MLP head has both biases, its linear head none
        image_size=visual.image_size or visual.trunk.pretrained_cfg.get("input_size", (3, 224, 224))[-1],
    )
    _check_timm_model(visual, cfg)
    return cfg


def _check_timm_model(visual: nn.Module, cfg: dict) -> None:
    from open_clip.timm_model import TimmModel

    embed_dim = visual.output_dim
    theirs = TimmModel(
        cfg["timm_model_name"],
        embed_dim,
        image_size=cfg["image_size"],
        pool=cfg["timm_pool"],
        proj=cfg["timm_proj"],
        proj_bias=cfg["timm_proj_bias"],
    )
    ours = {k: v.detach().float().cpu() for k, v in visual.state_dict().items()}
    expected = theirs.state_dict()
    differ = sorted(set(ours) ^ set(expected)) or [k for k in ours if ours[k].shape != expected[k].shape]
    if differ:
        raise ExportError(
            f"open_clip's TimmModel builds another network for this tower (it differs at {differ[:3]})"
        )
    theirs.load_state_dict(ours)
    size = cfg["image_size"]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    was_training = visual.training
    device, dtype = next(visual.parameters()).device, next(visual.parameters()).dtype
    with torch.no_grad():
        mine = visual.eval()(images.to(device, dtype)).float().cpu()
        other = theirs.eval()(images)
    visual.train(was_training)
    gap = float((mine - other).abs().max() / other.abs().max().clamp(min=1e-12))
    if gap > (1e-3 if dtype == torch.float32 else 5e-2):  # a bf16 / fp16 tower rounds its features
        raise ExportError(
            f"open_clip's TimmModel computes other features for this tower (relative gap {gap:.2g})"
        )
