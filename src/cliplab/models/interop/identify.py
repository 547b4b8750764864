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
    if "visual.class_embedding" in s:
        width = s["visual.class_embedding"].shape[0]
        patch = s["visual.conv1.weight"].shape[-1]
        grid = round((s["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        layers = _count(s, r"visual\.transformer\.resblocks\.(\d+)\.")
        embed = s["visual.proj"].shape[1] if "visual.proj" in s else None
        return ("vit", width, layers, patch, grid * patch, embed, text_width)
    if "visual.trunk.cls_token" in s:
        width = s["visual.trunk.cls_token"].shape[-1]
        patch = s["visual.trunk.patch_embed.proj.weight"].shape[-1]
        grid = round((s["visual.trunk.pos_embed"].shape[1] - 1) ** 0.5)
        layers = _count(s, r"visual\.trunk\.blocks\.(\d+)\.")
        embed = s["visual.head.proj.weight"].shape[0] if "visual.head.proj.weight" in s else None
        return ("vit", width, layers, patch, grid * patch, embed, text_width)
    if "visual.attnpool.positional_embedding" in s:
        width = s["visual.conv3.weight"].shape[0]
        layers = tuple(_count(s, rf"visual\.layer{i}\.(\d+)\.") for i in range(1, 5))
        grid = round((s["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        embed = s["visual.attnpool.c_proj.weight"].shape[0]
        return ("rn", width, layers, None, grid * 32, embed, text_width)
    if "visual.trunk.head.pos_embed" in s and "visual.trunk.stem.conv3.conv.weight" in s:
        width = s["visual.trunk.stem.conv3.conv.weight"].shape[0]
        layers = tuple(_count(s, rf"visual\.trunk\.stages\.{i}\.(\d+)\.") for i in range(4))
        grid = round((s["visual.trunk.head.pos_embed"].shape[0] - 1) ** 0.5)
        embed = s["visual.trunk.head.proj.weight"].shape[0]
        return ("rn", width, layers, None, grid * 32, embed, text_width)
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
