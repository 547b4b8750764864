"""Which checkpoints are complete, the newest one of a run, and what `ckpt_path=` means.

Complete: a `*.ckpt` entry not hidden (no `.partial` write in progress), and
- a file: a readable zip archive (torch's format; a truncated file lacks its central directory), or
- a folder: an FSDP2 / torch.distributed.checkpoint folder with its `.metadata` and Lightning's
  `meta.pt`, or a DeepSpeed folder with its `latest` tag file (both written last).
`on_exception.ckpt` (the state at a crash) is never picked by `last`; resume from it by naming it.
"""

import logging
import zipfile
from pathlib import Path

from cliplab.utils.errors import ConfigError

log = logging.getLogger("cliplab")

CHECKPOINT_SUFFIX = ".ckpt"
NOT_RESUME_POINTS = ("on_exception.ckpt",)


def checkpoint_kind(path: str | Path) -> str | None:
    """'file', 'dcp' (torch.distributed.checkpoint folder), 'deepspeed', or None when not a complete one."""
    path = Path(path)
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                return "file" if archive.namelist() else None
        except (zipfile.BadZipFile, OSError):
            return None
    if path.is_dir():
        if (path / ".metadata").is_file() and (path / "meta.pt").is_file():
            return "dcp"
        if (path / "latest").is_file():
            return "deepspeed"
    return None


def is_complete(path: str | Path) -> bool:
    return checkpoint_kind(path) is not None


def _mtime(path: Path) -> float:
    """When the checkpoint was finished (a folder: its newest entry; links are followed)."""
    if path.is_dir():
        return max([path.stat().st_mtime, *(child.stat().st_mtime for child in path.iterdir())])
    return path.stat().st_mtime


def complete_checkpoints(directory: str | Path) -> list[Path]:
    """The complete resume points in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        entry
        for entry in directory.iterdir()
        if entry.name.endswith(CHECKPOINT_SUFFIX)
        and not entry.name.startswith(".")
        and entry.name not in NOT_RESUME_POINTS
        and is_complete(entry)
    ]
    # last.ckpt wins a tie: it names the same state as the step checkpoint written with it
    return sorted(found, key=lambda p: (_mtime(p), p.name == "last.ckpt"))


def newest_checkpoint(directory: str | Path) -> Path | None:
    found = complete_checkpoints(directory)
    return found[-1] if found else None


def checkpoints_dir(path: str | Path) -> Path:
    """`<run dir>/checkpoints` for a run directory, else `path` itself (a checkpoints folder)."""
    path = Path(path)
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def resolve_ckpt_path(value, output_dir: str | Path) -> str | None:
    """What `ckpt_path=` points at, as a path Lightning can resume from (or None: start fresh).

    - `last`: the newest complete checkpoint of this run (`<output_dir>/checkpoints`); none yet (a fresh
      run, the first start of a requeued job) starts from scratch.
    - a run directory or a checkpoints folder: the newest complete checkpoint inside it.
    - a checkpoint file or folder: itself, if complete.
    """
    if value is None or value == "":
        return None
    if str(value) == "last":
        found = newest_checkpoint(Path(output_dir) / "checkpoints")
        if found is None:
            log.info(
                "ckpt_path=last: no complete checkpoint in %s/checkpoints yet; training from scratch",
                output_dir,
            )
            return None
        log.info("ckpt_path=last resumes from %s", found)
        return str(found)
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"ckpt_path={value} does not exist (give a checkpoint, a run directory, or last)")
    if is_complete(path):
        return str(path)
    if path.is_file() or path.name.endswith(CHECKPOINT_SUFFIX):
        raise ConfigError(
            f"ckpt_path={value} is not a complete checkpoint (truncated or still being written); "
            f"pick another one of {path.parent}, or give ckpt_path={path.parent.parent} for the newest"
        )
    found = newest_checkpoint(checkpoints_dir(path))
    if found is None:
        raise ConfigError(f"ckpt_path={value}: no complete checkpoint (*.ckpt) in {checkpoints_dir(path)}")
    log.info("ckpt_path=%s resumes from %s", value, found)
    return str(found)
