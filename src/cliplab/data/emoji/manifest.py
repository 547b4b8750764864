"""The manifest that marks a built emoji data set as complete, and its check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cliplab.utils.errors import DataError

MANIFEST = "manifest.json"


class CorruptDataset(DataError, RuntimeError):
    """The emoji data set is missing, partial or altered; the message names the rebuild command."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(root: Path, info: dict, tables: list[str]) -> dict:
    """Record `info` plus the sha256 of each table and the image count; written last of all."""
    info = dict(info)
    info["tables"] = {name: sha256(root / name) for name in tables}
    info["n_images"] = sum(1 for _ in (root / "images").rglob("*.png"))
    (root / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def check_manifest(root: Path, rebuild: str) -> dict:
    """The manifest of a complete data set at `root`; raises CorruptDataset with one line otherwise."""

    def fail(why: str) -> CorruptDataset:
        return CorruptDataset(f"emoji data set at {root} {why}; rebuild it with: {rebuild}")

    path = root / MANIFEST
    if not path.is_file():
        raise fail("is missing or was not finished (no manifest.json)")
    try:
        info = json.loads(path.read_text())
        tables = info["tables"]
        n_images = int(info["n_images"])
    except (ValueError, KeyError, TypeError) as err:
        raise fail(f"has an unreadable manifest.json ({type(err).__name__})") from None
    for name, digest in tables.items():
        table = root / name
        if not table.is_file():
            raise fail(f"lacks {name}")
        if sha256(table) != digest:
            raise fail(f"has a modified {name} (checksum differs from manifest.json)")
    found = sum(1 for _ in (root / "images").rglob("*.png"))
    if found != n_images:
        raise fail(f"has {found} images where manifest.json lists {n_images}")
    return info
