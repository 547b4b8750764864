"""Atomic checkpoint writes: a checkpoint appears under its name only once it is complete.

Every checkpoint (a file, or a folder for FSDP2 distributed checkpoints and DeepSpeed) is first written
as `.<name>.partial` in the same directory, then renamed to `<name>` with `os.replace` (one atomic
step for a file; for a folder the previous one is moved aside first). A write killed halfway leaves
only a `.partial` entry, which `cliplab.checkpoints.find` never picks.
"""

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
    """Where the checkpoint `path` is written before it is complete (same directory, hidden)."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def publish(partial: str | Path, final: str | Path) -> None:
    """Rename a complete `partial` checkpoint (file or folder) to `final`, replacing what was there."""
    partial, final = Path(partial), Path(final)
    if partial.is_dir() and (final.is_dir() and not final.is_symlink()):
        # rename(2) cannot replace a non-empty folder: move the old one aside, then drop it
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old)
        return
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(partial, final)


def save_atomically(trainer: "pl.Trainer", filepath: str | Path, weights_only: bool = False) -> None:
    """`trainer.save_checkpoint(filepath)` on every rank, published by rank 0 once all ranks are done.

    The run directory is shared by every rank (the cliplab contract), so one rename publishes it.
    """
    filepath = Path(filepath)
    partial = partial_path(filepath)
    if trainer.is_global_zero:
        filepath.parent.mkdir(parents=True, exist_ok=True)
        if partial.is_dir():  # left by an earlier write that was killed
            shutil.rmtree(partial)
    trainer.strategy.barrier("cliplab.save_atomically.start")
    trainer.save_checkpoint(partial, weights_only)
    trainer.strategy.barrier("cliplab.save_atomically.written")
    if trainer.is_global_zero:
        publish(partial, filepath)
    trainer.strategy.barrier("cliplab.save_atomically.published")
