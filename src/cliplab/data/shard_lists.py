"""Expanding shard specifications into shard URL lists, and reading shard sizes.

A specification is a string or a list of strings; a string may join several with `::`. Each piece is a
brace pattern (`/data/laion/{00000..41407}.tar`), a local file, a directory (its `*.tar`), a `sizes.json`
(its keys, relative to it), a glob, a `pipe:` command or an fsspec URL (`s3://...`). Local shards that do
not exist are dropped at start-up with a warning; if nothing is left the run stops with a clear error.
"""

import glob
import json
import logging
import os

from braceexpand import braceexpand

log = logging.getLogger(__name__)

SIZES_FILE = "sizes.json"


class NoShardsError(ValueError):
    pass


def _is_local(url: str) -> bool:
    return not url.startswith("pipe:") and ("://" not in url or url.startswith("file://"))


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def split_spec(spec) -> list[str]:
    if spec is None:
        return []
    pieces = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for piece in pieces for p in str(piece).split("::") if p.strip()]


def _expand_piece(piece: str) -> list[str]:
    if not _is_local(piece):
        return list(braceexpand(piece))
    path = os.path.expanduser(_local_path(piece))
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "*.tar")))
    if os.path.basename(path) == SIZES_FILE and os.path.isfile(path):
        with open(path) as f:
            names = list(json.load(f))
        return [os.path.join(os.path.dirname(path), n) for n in names]
    urls = []
    for p in braceexpand(path):
        urls.extend(sorted(glob.glob(p)) if glob.has_magic(p) else [p])
    return urls


def expand_shards(spec, setting: str = "urls") -> list[str]:
    """All shard URLs of a specification; raise NoShardsError (naming `setting`) if there are none."""
    pieces = split_spec(spec)
    urls = [u for piece in pieces for u in _expand_piece(piece)]
    missing = [u for u in urls if _is_local(u) and not os.path.isfile(_local_path(u))]
    if missing:
        missing_set = set(missing)
        if len(missing_set) < len(urls):  # when none exist, the error below says it all
            log.warning(
                "%d of %d shards of %r do not exist, e.g. %s", len(missing), len(urls), spec, missing[0]
            )
        urls = [u for u in urls if u not in missing_set]
    if not urls:
        raise NoShardsError(
            f"no shards found for {setting}={spec!r}; point it at your shards with the override "
            f"{setting}='/path/to/shards/{{00000..00099}}.tar' (or a directory, or a sizes.json)"
        )
    return urls


def shard_sizes(urls: list[str]) -> dict[str, int]:
    """Sample counts per shard from the `sizes.json` next to local shards (missing entries are absent)."""
    sizes = {}
    for directory in {os.path.dirname(_local_path(u)) for u in urls if _is_local(u)}:
        path = os.path.join(directory, SIZES_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                for name, n in json.load(f).items():
                    sizes[os.path.join(directory, os.path.basename(name))] = int(n)
    return {u: sizes[_local_path(u)] for u in urls if _local_path(u) in sizes}
