"""Weights for an image tower alone (`TimmImageTower(checkpoint_path=...)`)."""

import logging
from pathlib import Path

from torch import nn

from cliplab.models.interop.identify import describe
from cliplab.models.interop.visual_keys import openai_visual_to_tower
from cliplab.models.safe_load import check_state_dict, load_state_dict

log = logging.getLogger(__name__)


def load_image_tower_checkpoint(tower: nn.Module, path: str | Path, allow_unsafe_pickle: bool = False):
    """Load a full CLIP checkpoint's `visual.*` part, a tower state dict (`trunk.*`, `head.*`) or a bare timm
    model state dict. Keys the file lacks (e.g. a new projection head) keep their initialisation."""
    state = load_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    if any(k.startswith("visual.") for k in state):
        tower_state = openai_visual_to_tower(state, tower)
    elif any(k.startswith(("trunk.", "head.")) for k in state):
        tower_state = state
    else:
        tower_state = {f"trunk.{k}": v for k, v in state.items()}
    trunk_keys = {k for k in tower.state_dict() if k.startswith("trunk.")}
    # A bare timm checkpoint carries its classifier; the tower's trunk has none.
    tower_state = {k: v for k, v in tower_state.items() if not k.startswith("trunk.") or k in trunk_keys}
    check_state_dict(tower, tower_state, strict=False, what=describe(state))
    missing = tower.load_state_dict(tower_state, strict=False).missing_keys
    if any(k in trunk_keys for k in missing):
        raise ValueError(f"{path} lacks trunk weights: {sorted(k for k in missing if k in trunk_keys)[:10]}")
    if missing:
        log.info("image tower keys not in %s (kept at init): %s", path, missing)
