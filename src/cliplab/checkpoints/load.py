"""Load a cliplab checkpoint (a file, an FSDP2 distributed-checkpoint folder, or a DeepSpeed folder)
without running code from it, consolidated into one `{"state_dict", "hyper_parameters", ...}` dict.

`check_safe(path)` refuses any pickle in it that needs more than tensors and plain containers (the
`UnsafeCheckpointError` line of `cliplab.models.safe_load`), unless `allow_unsafe_pickle=True`. It reads
no tensor data (files are memory-mapped), so it runs before resuming too.
"""

import pickle
import warnings
from pathlib import Path

import torch

from cliplab.checkpoints.find import checkpoint_kind
from cliplab.models.safe_load import UnsafeCheckpointError, load_file, refuse_unsafe_pickle
from cliplab.utils.errors import ConfigError

# What torch.distributed.checkpoint's `.metadata` pickle may name: its own dataclasses, torch sizes,
# dtypes and layouts, paths and containers; anything else is refused.
_DCP_MODULES = ("torch.distributed.checkpoint.", "torch.distributed._shard.")
_DCP_GLOBALS = {
    ("torch", "Size"),
    ("torch._utils", "_get_layout"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib._local", "PosixPath"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        layout = module == "torch" and isinstance(
            getattr(torch, name, None), (torch.layout, torch.memory_format)
        )
        if module.startswith(_DCP_MODULES) or (module, name) in _DCP_GLOBALS or dtype or layout:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def _check_dcp_metadata(path: Path, allow_unsafe_pickle: bool) -> None:
    metadata = path / ".metadata"
    try:
        with metadata.open("rb") as file:
            _MetadataUnpickler(file).load()
    except pickle.UnpicklingError as err:
        if not allow_unsafe_pickle:
            raise UnsafeCheckpointError(
                f"{metadata} is a pickle that needs more than checkpoint metadata to load, so loading it could "
                f"run code from the file. Refused. If you trust the file, pass allow_unsafe_pickle=True (config: "
                f"`allow_unsafe_pickle: true`). {err}"
            ) from None


def check_safe(path: str | Path, allow_unsafe_pickle: bool = False) -> str:
    """The checkpoint's kind ('file' | 'dcp' | 'deepspeed'); raises if loading it could run code."""
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind is None:
        raise ConfigError(
            f"{path} is not a complete checkpoint (a .ckpt file, or an FSDP2 / DeepSpeed folder)"
        )
    if allow_unsafe_pickle:
        return kind
    if kind == "file":
        refuse_unsafe_pickle(path)
    elif kind == "dcp":
        _check_dcp_metadata(path, allow_unsafe_pickle)
        refuse_unsafe_pickle(path / "meta.pt")
    else:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            for file in sorted(path.rglob("*.pt")):
                refuse_unsafe_pickle(file)
    return kind


def _deepspeed_globals() -> list:
    """The plain-data DeepSpeed classes its ZeRO optimizer-state files pickle: the stage (an int enum), a
    partition's (numel, start) and the loss scaler's numbers. DeepSpeed itself reads those files with full
    unpickling (resume, zero_to_fp32), so a folder is checked first with these allowed and nothing else."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def _dcp_state(path: Path) -> dict:
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    checkpoint = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        state = _load_state_dict_from_keys("state_dict", checkpoint_id=str(path))
    checkpoint["state_dict"] = state["state_dict"]
    return checkpoint


def _deepspeed_state(path: Path) -> dict:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag = (path / "latest").read_text().strip()
    # rank 0's model states (ZeRO-3: one file per rank, each with the client state) hold Lightning's keys
    states = path / tag / "mp_rank_00_model_states.pt"
    if not states.is_file():
        states = path / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    client = torch.load(states, map_location="cpu", weights_only=True)
    checkpoint = {k: v for k, v in client.items() if k not in ("module", "optimizer", "buffer_names")}
    checkpoint["state_dict"] = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
    return checkpoint


def load_checkpoint(path: str | Path, allow_unsafe_pickle: bool = False) -> dict:
    """The whole checkpoint on CPU, with one consolidated `state_dict` (sharded folders gathered)."""
    path = Path(path)
    kind = check_safe(path, allow_unsafe_pickle)
    if kind == "file":
        return load_file(path, allow_unsafe_pickle=allow_unsafe_pickle)
    return _dcp_state(path) if kind == "dcp" else _deepspeed_state(path)


def load_module(path: str | Path, allow_unsafe_pickle: bool = False):
    """The `CLIPModule` of a checkpoint, rebuilt from the hyperparameters stored in it."""
    from cliplab.lit.module import CLIPModule

    checkpoint = load_checkpoint(path, allow_unsafe_pickle)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise ConfigError(f"{path} has no cliplab hyperparameters (is it a cliplab training checkpoint?)")
    module = CLIPModule(**{**hparams, "compile": False})
    module.configure_model()
    state = {k.removeprefix("_forward_module."): v for k, v in checkpoint["state_dict"].items()}
    module.load_state_dict(state, strict=True)
    module.on_load_checkpoint(checkpoint)
    return module
