"""Tell what architecture a CLIP state dict holds, from its tensor shapes, for error messages and exports."""

import re

import torch

# name -> (image tower kind, vision width, blocks per stage or depth, patch, image size, embed, text width)
NAMED_SIGNATURES = {
    "rn50": ("rn", 64, (3, 4, 6, 3), None, 224, 1024, 512),
    "rn101": ("rn", 64, (3, 4, 23, 3), None, 224, 512, 512),
    "rn50x4": ("rn", 80, (4, 6, 10, 6), None, 288, 640, 640),
    "rn50x16": ("rn", 96, (6, 8, 18, 8), None, 384, 768, 768),
    "rn50x64": ("rn", 128, (3, 15, 36, 10), None, 448, 1024, 1024),
    "vit_b32": ("vit", 768, 12, 32, 224, 512, 512),
    "vit_b16": ("vit", 768, 12, 16, 224, 512, 512),
    "vit_l14": ("vit", 1024, 24, 14, 224, 768, 768),
    "vit_l14_336": ("vit", 1024, 24, 14, 336, 768, 768),
    "tiny": ("vit", 256, 4, 16, 64, 256, 256),
    "tiny_rn": ("rn", 16, (1, 1, 1, 1), None, 64, 256, 256),
}


# Where each layout keeps what the signature reads: OpenAI/open_clip names first, then cliplab's (timm).
_VIT_LAYOUTS = (  # (class token, patch conv, position table, block pattern, projection, its embed axis)
    (
        "visual.class_embedding",
        "visual.conv1.weight",
        "visual.positional_embedding",
        r"visual\.transformer\.resblocks\.(\d+)\.",
        "visual.proj",
        1,
    ),
    (
        "visual.trunk.cls_token",
        "visual.trunk.patch_embed.proj.weight",
        "visual.trunk.pos_embed",
        r"visual\.trunk\.blocks\.(\d+)\.",
        "visual.head.proj.weight",
        0,
    ),
)
_RN_LAYOUTS = (  # (attention-pool positions, stem's last conv, stage block pattern, first stage, projection)
    (
        "visual.attnpool.positional_embedding",
        "visual.conv3.weight",
        r"visual\.layer{}\.(\d+)\.",
        1,
        "visual.attnpool.c_proj.weight",
    ),
    (
        "visual.trunk.head.pos_embed",
        "visual.trunk.stem.conv3.conv.weight",
        r"visual\.trunk\.stages\.{}\.(\d+)\.",
        0,
        "visual.trunk.head.proj.weight",
    ),
)


def _count(state, pattern: str) -> int:
    found = {m[1] for k in state if (m := re.match(pattern, k))}
    return len(found)


def signature(state: dict[str, torch.Tensor]) -> tuple | None:
    """(kind, width, layers, patch, image size, embed dim, text width) or None if not recognised.

    Understands OpenAI/open_clip (`visual.conv1`, `visual.attnpool`) and cliplab (`visual.trunk.*`) layouts.
    """
    s = state
    text = s.get("text.token_embedding.weight", s.get("token_embedding.weight"))
    text_width = None if text is None else text.shape[1]
    for cls, patch_conv, positions, blocks, proj, embed_axis in _VIT_LAYOUTS:
        if cls in s:
            patch = s[patch_conv].shape[-1]
            grid = round((s[positions].shape[-2] - 1) ** 0.5)
            embed = s[proj].shape[embed_axis] if proj in s else None
            return ("vit", s[cls].shape[-1], _count(s, blocks), patch, grid * patch, embed, text_width)
    for positions, stem_conv, stage_blocks, first_stage, proj in _RN_LAYOUTS:
        if positions in s and stem_conv in s:
            layers = tuple(_count(s, stage_blocks.format(first_stage + i)) for i in range(4))
            grid = round((s[positions].shape[-2] - 1) ** 0.5)
            return ("rn", s[stem_conv].shape[0], layers, None, grid * 32, s[proj].shape[0], text_width)
    return None


def describe(state: dict[str, torch.Tensor]) -> str:
    """A named model (e.g. "rn50") or a description of the architecture the weights belong to."""
    sig = signature(state)
    if sig is None:
        return "an unrecognised layout (neither OpenAI/open_clip CLIP nor cliplab keys)"
    for name, named in NAMED_SIGNATURES.items():
        if named == sig:
            return f"the named model `{name}` (conf/model/{name}.yaml)"
    kind, width, layers, patch, size, embed, text_width = sig
    arch = f"ViT width {width}, {layers} layers, patch {patch}" if kind == "vit" else f"ResNet width {width}"
    if kind == "rn":
        arch += f", blocks {list(layers)}"
    close = [n for n, named in NAMED_SIGNATURES.items() if named[:4] == sig[:4]]
    hint = f"; same image tower as `{close[0]}`" if close else ""
    return f"an unnamed CLIP ({arch}, image {size}, embed {embed}, text width {text_width}){hint}"
