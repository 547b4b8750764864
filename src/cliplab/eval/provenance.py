"""Fingerprints that say what produced a result: weights, checkpoint files, data, prompts."""

import hashlib
import json
from pathlib import Path

import torch
from torch import nn


def digest(value) -> str:
    """sha256 (first 16 hex digits) of any JSON-able value, keys sorted: lists of files, prompts, labels."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (as `sha256sum` prints it), or of every file under a folder (sharded checkpoints)
    with its relative name, in sorted order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode())
        with file.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


@torch.no_grad()
def weights_sha256(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, values): the same weights give the same
    hash whichever file or run they came from. Sharded weights (FSDP2 DTensors) are not hashed: that would
    need every rank, and results are written by rank 0 alone."""
    state = model.state_dict()
    if any(hasattr(t, "full_tensor") for t in state.values()):
        return "not hashed (sharded weights)"
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def transform_description(transform) -> str:
    """The image preprocessing: size and resize mode (the transform's repr), mean and std."""
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return f"{transform!r} mean={mean} std={std}"
