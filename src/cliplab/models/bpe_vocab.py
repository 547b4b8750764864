"""Locate OpenAI CLIP's BPE merges file (`bpe_simple_vocab_16e6.txt.gz`) without committing it.

The file is MIT-licensed data shipped inside the open_clip wheel. We keep a verified copy in the cliplab
cache: taken from an installed `open_clip_torch` distribution when there is one (found through package
metadata, so open_clip is never imported), else extracted from a wheel fetched with `pip download`.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from cliplab.utils.paths import cache_dir

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE_BYTES = 1_356_917
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
WHEEL_REQUIREMENT = "open-clip-torch==3.3.0"
_MEMBER = f"open_clip/{VOCAB_NAME}"


def _is_valid(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != VOCAB_SIZE_BYTES:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == VOCAB_SHA256


def _from_installed_open_clip() -> Path | None:
    try:
        dist = metadata.distribution("open_clip_torch")
    except metadata.PackageNotFoundError:
        return None
    candidate = Path(str(dist.locate_file(_MEMBER)))
    return candidate if candidate.is_file() else None


def _from_downloaded_wheel(workdir: Path) -> Path | None:
    cmd = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps", "-q", "-d", str(workdir)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    for wheel in workdir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            if _MEMBER in archive.namelist():
                target = workdir / VOCAB_NAME
                target.write_bytes(archive.read(_MEMBER))
                return target
    return None


def _install(source: Path, target: Path) -> bool:
    """Copy `source` to `target` atomically (parallel workers may race here) if it verifies."""
    if not _is_valid(source):
        return False
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return True


def bpe_vocab_path() -> Path:
    """Path to a verified copy of the CLIP BPE merges file in `cache_dir()`, fetching it on first use."""
    target = cache_dir() / "tokenizers" / VOCAB_NAME
    if _is_valid(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    installed = _from_installed_open_clip()
    if installed is not None and _install(installed, target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = _from_downloaded_wheel(Path(tmp))
        if downloaded is not None and _install(downloaded, target):
            return target
    raise RuntimeError(
        f"cannot obtain {VOCAB_NAME}: install open-clip-torch, or allow `pip download {WHEEL_REQUIREMENT}`, "
        f"or place the file (sha256 {VOCAB_SHA256[:12]}...) at {target}"
    )
