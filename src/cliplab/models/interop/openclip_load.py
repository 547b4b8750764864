"""Load OpenAI / open_clip CLIP weights into a cliplab CLIP.

Accepted layouts: the flat CLIP layout (OpenAI `clip/model.py`, open_clip `CLIP`: text keys at top level),
open_clip's CustomTextCLIP layout (`text.*`), open_clip timm towers (`visual.trunk.*`), cliplab's own
layout; wrapped in training checkpoints (`{"state_dict": ...}`) and with DDP `module.` / torch.compile
`_orig_mod.` prefixes. Image towers go through timm's OpenAI converters (see `visual_keys`).
"""

from pathlib import Path

import torch
from torch import nn

from cliplab.models.interop.identify import describe
from cliplab.models.interop.visual_keys import openai_visual_to_tower
from cliplab.models.safe_load import check_state_dict, extract_state_dict, load_file

# Top-level keys of OpenAI's built-in text tower (open_clip moves them under `text.` for CustomTextCLIP).
FLAT_TEXT_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
# Extra entries of OpenAI's JIT archives (and open_clip's non-persistent mask), not weights.
NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask", "text.attn_mask")


def to_cliplab_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename (and where needed resize) a CLIP state dict to `model`'s keys."""
    state = {k: v for k, v in extract_state_dict(state).items() if k not in NON_WEIGHTS}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(FLAT_TEXT_PREFIXES):
            out[f"text.{key}"] = value
        elif key.startswith("text.") or not key.startswith("visual."):
            out[key] = value
    out.update({f"visual.{k}": v for k, v in openai_visual_to_tower(state, model.visual).items()})

    expected = model.state_dict()
    # open_clip's HFTextEncoder built from a config object keeps the encoder's pooler even when its pooling
    # never reads it (mean, max, cls_last_hidden_state): dead weights, dropped where our tower has none.
    unused_pooler = [k for k in out if k.startswith("text.transformer.pooler.") and k not in expected]
    for key in unused_pooler:
        del out[key]
    for name in ("logit_scale", "logit_bias"):
        if name in out and name in expected:
            out[name] = out[name].reshape(expected[name].shape)  # scalar vs 1-element tensors
    if "logit_bias" in expected and "logit_bias" not in out:
        out["logit_bias"] = expected["logit_bias"].clone()  # a softmax-CLIP checkpoint for a sigmoid run
    pos = "text.positional_embedding"
    if pos in out and pos in expected and out[pos].shape != expected[pos].shape:
        from cliplab.models.text_tower import resize_text_pos_embed

        out[pos] = resize_text_pos_embed(out[pos], expected[pos].shape[0])
    return out


def load_openclip_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load OpenAI/open_clip weights into `model`; mismatches raise an error naming keys, shapes and the
    architecture the checkpoint appears to be."""
    raw = extract_state_dict(state)
    converted = to_cliplab_state_dict(raw, model)
    check_state_dict(model, converted, strict=strict, what=describe(raw))
    model.load_state_dict(converted, strict=strict)


def load_openclip_checkpoint(
    model: nn.Module, path: str | Path, strict: bool = True, allow_unsafe_pickle: bool = False
) -> None:
    """`load_openclip_state_dict` from a file (safetensors, or a pickle loaded with weights_only=True)."""
    load_openclip_state_dict(model, load_file(path, allow_unsafe_pickle=allow_unsafe_pickle), strict=strict)
