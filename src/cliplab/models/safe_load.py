"""Load checkpoint files without running code from them, and explain mismatches clearly.

Pickle files can run arbitrary code when unpickled. We read safetensors when we can, otherwise
`torch.load(weights_only=True)` (tensors, containers and plain numbers only). A file that needs more is
refused unless the caller passes `allow_unsafe_pickle=True` for a file they trust.
"""

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from cliplab.utils.errors import CliplabError

log = logging.getLogger(__name__)

# Prefixes that wrappers add in front of every key: DDP, torch.compile, the Lightning module's `model`.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Keys that hold a model's weights inside a training checkpoint (open_clip, Lightning, EMA).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


class UnsafeCheckpointError(CliplabError, RuntimeError):
    """The file needs full unpickling (it could run code); refused without `allow_unsafe_pickle=True`."""


class CheckpointMismatchError(CliplabError, ValueError):
    """The checkpoint's keys or shapes do not fit the model."""


def load_file(path: str | Path, allow_unsafe_pickle: bool = False, map_location="cpu"):
    """The object in `path`: a dict of tensors for safetensors, else what a safe unpickle gives."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(str(path), device=str(map_location))
    if _is_torchscript(path):
        # OpenAI's released `.pt` files are TorchScript archives: deserialising TorchScript runs no Python
        # (unlike a pickle), and only the parameters are kept.
        return torch.jit.load(str(path), map_location=map_location).state_dict()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe_pickle:
            raise _unsafe(path, err) from None
    log.warning(
        "Loading %s with full unpickling (allow_unsafe_pickle=True): only do this for trusted files", path
    )
    return torch.load(path, map_location=map_location, weights_only=False)


def refuse_unsafe_pickle(path: str | Path) -> None:
    """Raise `UnsafeCheckpointError` if `path` needs more than tensors and plain containers to unpickle.

    Memory-maps the file, so no tensor data is read: cheap enough to run before a resume.
    """
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise _unsafe(path, err) from None
    except RuntimeError:  # not a zip archive (legacy format): mmap is not possible, read it
        load_file(path)


def _unsafe(path: Path, err: Exception) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} is a pickle that needs more than tensors to load, so loading it could run code "
        f"from the file. Refused. If you trust the file, pass allow_unsafe_pickle=True (config: "
        f"`allow_unsafe_pickle: true`), or convert it to safetensors. torch said: {_first_line(err)}"
    )


def load_state_dict(path: str | Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights in `path` as a flat state dict (training checkpoints unwrapped, prefixes stripped)."""
    return extract_state_dict(load_file(path, allow_unsafe_pickle=allow_unsafe_pickle))


def extract_state_dict(obj) -> dict[str, torch.Tensor]:
    """Find the weights in a checkpoint object and strip DDP/compile/Lightning prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    return strip_prefixes(state)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key carries (repeatedly: `module._orig_mod.` etc.)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    # torch.compile can also wrap a submodule only (e.g. `visual._orig_mod.`).
    return {k.replace("._orig_mod.", "."): v for k, v in state.items()}


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True, what: str | None = None
) -> None:
    """Raise `CheckpointMismatchError` naming missing/unexpected keys and shape mismatches.

    `what` describes the checkpoint (e.g. which named model it appears to be) for the message.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not shapes and (not strict or not (missing or unexpected)):
        return
    lines = ["the checkpoint does not fit the model:"]
    if what:
        lines.append(f"  the checkpoint appears to be: {what}")
    for title, items in (
        ("shape mismatches", shapes),
        ("missing keys", missing),
        ("unexpected keys", unexpected),
    ):
        if items and (strict or title == "shape mismatches"):
            shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in shown)
    raise CheckpointMismatchError("\n".join(lines))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def _first_line(err: Exception) -> str:
    """The informative line of torch's weights-only error (it names the global the file asked for)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "GLOBAL" in line]
    return (named or lines or [type(err).__name__])[0]
