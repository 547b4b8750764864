"""Image-tower weights between OpenAI's `visual.*` layout and cliplab's `TimmImageTower` layout.

OpenAI -> cliplab uses timm's own converters (the ones timm applies to `*.openai` weights), then adds what
timm leaves to its classifier: the ViT's bias-free `visual.proj` becomes `head.proj.weight`. cliplab ->
OpenAI is the inverse, written as renames and checked against timm's converter in the tests.
"""

import re

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import byobnet, vision_transformer
from torch import nn

OPENAI_VIT_MARKER = "visual.class_embedding"
OPENAI_RN_MARKER = "visual.attnpool.positional_embedding"


def tower_kind(tower: nn.Module) -> str:
    """'vit' (a CLIP-layout ViT: pre-norm, class token, bias-free linear projection; pooled by its class
    token or by the mean of its patch tokens), 'rn' (CLIP ResNet), or 'other'."""
    trunk = getattr(tower, "trunk", None)
    head = getattr(tower, "head", None)
    if isinstance(trunk, vision_transformer.VisionTransformer):
        clip_like = not isinstance(trunk.norm_pre, nn.Identity) and trunk.global_pool in ("token", "avg")
        if clip_like and head is not None and hasattr(head, "proj") and len(list(head.children())) == 1:
            return "vit"
    own_attn_pool = isinstance(trunk, byobnet.ByobNet) and isinstance(trunk.head, byobnet.AttentionPool2d)
    if own_attn_pool and head is not None and not list(head.children()):
        return "rn"
    return "other"


def vit_pooling(tower: nn.Module) -> tuple[str, bool]:
    """open_clip's names for a CLIP-layout ViT's pooling: `pool_type` ("tok" or "avg") and
    `final_ln_after_pool` (timm's `fc_norm`: the final LayerNorm after the mean, not before it)."""
    trunk = tower.trunk
    return ("tok" if trunk.global_pool == "token" else "avg"), not isinstance(trunk.fc_norm, nn.Identity)


# ---- OpenAI -> cliplab ---------------------------------------------------------------------------------


def openai_visual_to_tower(state: dict[str, torch.Tensor], tower: nn.Module) -> dict[str, torch.Tensor]:
    """`visual.*` (OpenAI/open_clip CLIP) -> keys of `tower` (no `visual.` prefix)."""
    kind = tower_kind(tower)
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    if OPENAI_VIT_MARKER in visual:
        if kind != "vit":
            raise ValueError(
                "the checkpoint holds an OpenAI-layout ViT image tower but the model's is not one"
            )
        proj = visual.pop("visual.proj", None)
        trunk_state = vision_transformer._convert_openai_clip(visual, tower.trunk, prefix="visual.")
        trunk_state.pop("head.weight", None)
        trunk_state.pop("head.bias", None)
        if vit_pooling(tower)[1]:  # OpenAI's ln_post is timm's fc_norm when it follows the mean pool
            trunk_state = {
                k.replace("norm.", "fc_norm.", 1) if k.startswith("norm.") else k: v
                for k, v in trunk_state.items()
            }
        pos = trunk_state["pos_embed"]
        grid = tower.trunk.patch_embed.grid_size
        if pos.shape[1] != 1 + grid[0] * grid[1]:
            # A checkpoint trained at another resolution: resize the patch grid, keep the class token.
            trunk_state["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=1)
        out = {f"trunk.{k}": v for k, v in trunk_state.items()}
        if proj is not None:
            out["head.proj.weight"] = proj.t().contiguous()
        return out
    if OPENAI_RN_MARKER in visual:
        if kind != "rn":
            raise ValueError(
                "the checkpoint holds an OpenAI-layout ResNet image tower but the model's is not one"
            )
        trunk_state = byobnet._convert_openai_clip(visual, tower.trunk, prefix="visual.")
        pos = trunk_state["head.pos_embed"]
        want = tower.trunk.head.pos_embed.shape[0]
        if pos.shape[0] != want:
            side = round((want - 1) ** 0.5)
            pos = resample_abs_pos_embed(pos[None], new_size=[side, side], num_prefix_tokens=1)[0]
            trunk_state["head.pos_embed"] = pos
        return {f"trunk.{k}": v for k, v in trunk_state.items()}
    # Already cliplab / open_clip TimmModel layout (`visual.trunk.*`, `visual.head.*`).
    return {k[len("visual.") :]: v for k, v in visual.items()}


# ---- cliplab -> OpenAI ---------------------------------------------------------------------------------

_VIT_RENAMES = [
    (r"^trunk\.patch_embed\.proj\.", "conv1."),
    (r"^trunk\.norm_pre\.", "ln_pre."),
    (r"^trunk\.norm\.", "ln_post."),
    (r"^trunk\.fc_norm\.", "ln_post."),  # mean-pooled ViTs normalise after the pool (final_ln_after_pool)
    (r"^trunk\.blocks\.(\d+)\.norm(\d)\.", r"transformer.resblocks.\1.ln_\2."),
    (r"^trunk\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^trunk\.blocks\.(\d+)\.attn\.proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^trunk\.blocks\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^trunk\.blocks\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
]
_RN_CONV = {"conv1_1x1": "1", "conv2_kxk": "2", "conv3_1x1": "3"}


def _rn_rename(key: str) -> str:
    m = re.match(r"^trunk\.stem\.conv(\d)\.(conv|bn)\.(.+)$", key)
    if m:
        return f"{m[2]}{m[1]}.{m[3]}"
    m = re.match(r"^trunk\.stages\.(\d+)\.(\d+)\.(conv\d_\w+?)\.(conv|bn)\.(.+)$", key)
    if m:
        return f"layer{int(m[1]) + 1}.{m[2]}.{m[4]}{_RN_CONV[m[3]]}.{m[5]}"
    m = re.match(r"^trunk\.stages\.(\d+)\.(\d+)\.shortcut\.conv\.(conv|bn)\.(.+)$", key)
    if m:
        return f"layer{int(m[1]) + 1}.{m[2]}.downsample.{0 if m[3] == 'conv' else 1}.{m[4]}"
    m = re.match(r"^trunk\.head\.(pos_embed|q|k|v|proj)\.?(.*)$", key)
    if m:
        name = {
            "pos_embed": "positional_embedding",
            "q": "q_proj",
            "k": "k_proj",
            "v": "v_proj",
            "proj": "c_proj",
        }
        return "attnpool." + name[m[1]] + (f".{m[2]}" if m[2] else "")
    raise KeyError(f"no OpenAI name for CLIP ResNet key {key}")


def tower_to_openai_visual(tower: nn.Module) -> dict[str, torch.Tensor]:
    """The tower's weights under OpenAI/open_clip `visual.*` names (ViT or CLIP ResNet towers only)."""
    kind = tower_kind(tower)
    out = {}
    for key, value in tower.state_dict().items():
        if kind == "vit":
            if key == "trunk.cls_token":
                out["class_embedding"] = value.reshape(-1)
                continue
            if key == "trunk.pos_embed":
                out["positional_embedding"] = value[0]
                continue
            if key == "head.proj.weight":
                out["proj"] = value.t().contiguous()
                continue
            new = key
            for pattern, repl in _VIT_RENAMES:
                new = re.sub(pattern, repl, new)
            if new == key:
                raise KeyError(f"no OpenAI name for ViT key {key}")
            out[new] = value
        elif kind == "rn":
            out[_rn_rename(key)] = value
        else:
            raise ValueError(
                "only CLIP-layout ViT towers (token pool, linear proj) and CLIP ResNet towers "
                "have an OpenAI layout"
            )
    return {f"visual.{k}": v for k, v in out.items()}
