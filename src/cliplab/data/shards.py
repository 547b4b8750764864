"""Shard builder: a table (or folder) of image-caption pairs -> webdataset tar shards + sizes.json.

Each sample is `<key>.jpg` (re-encoded JPEG, longest side at most `max_size`), `<key>.txt` (caption) and
`<key>.json` (key, caption, source path, original and stored size), the layout img2dataset writes, so
the result trains through the same streaming path as LAION. Unreadable images and empty captions are
skipped and counted, never written. Shards are written to a temporary name and renamed when complete.

    python -m cliplab.data.shards train.csv out/train --max-size 128 --samples-per-shard 1000
"""

import argparse
import io
import json
import os
import sys
import tarfile
import time

import pandas as pd
from PIL import Image

from cliplab.data.folder_source import FolderSource
from cliplab.data.shard_lists import SIZES_FILE
from cliplab.data.table_source import read_table, resolve_image_path
from cliplab.data.transforms import flatten_alpha

JPEG_QUALITY = 95


def encode_image(path: str, max_size: int | None) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """Read, flatten transparency onto white, shrink so the longest side <= max_size, JPEG-encode."""
    with Image.open(path) as img:
        img.load()
        original = img.size
        img = flatten_alpha(img)
        if max_size and max(img.size) > max_size:
            scale = max_size / max(img.size)
            size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
            img = img.resize(size, Image.BICUBIC, reducing_gap=3.0)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), original, img.size


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    pairs, out_dir, *, samples_per_shard=1000, max_size=None, prefix="shard", verbose=False
) -> dict:
    """Write (image path, caption[, alternative captions]) items as shards; return {"shards", "samples",
    "skipped"}. Alternatives (one caption per line, no newlines inside) go to `<key>.captions`."""
    os.makedirs(out_dir, exist_ok=True)
    sizes: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    tar = None
    shard_name = None
    written = 0
    start = time.time()

    def close_shard():
        tar.close()
        os.replace(os.path.join(out_dir, shard_name + ".tmp"), os.path.join(out_dir, shard_name))

    for image_path, caption, *more in pairs:
        alternatives = [c.strip() for c in (more[0] if more else ()) if c and c.strip()]
        caption = "" if caption is None or caption != caption else str(caption).strip()
        if not caption:
            skipped.append((image_path, "empty caption"))
            continue
        try:
            data, original, stored = encode_image(image_path, max_size)
        except Exception as e:  # noqa: BLE001  (any unreadable input is skipped and reported)
            skipped.append((image_path, f"{type(e).__name__}: {e}"))
            continue
        if tar is None or sizes[shard_name] >= samples_per_shard:
            if tar is not None:
                close_shard()
            shard_name = f"{prefix}-{len(sizes):05d}.tar"
            sizes[shard_name] = 0
            tar = tarfile.open(  # noqa: SIM115  (closed by close_shard)
                os.path.join(out_dir, shard_name + ".tmp"), "w", format=tarfile.USTAR_FORMAT
            )
        key = f"{written:09d}"
        meta = {"key": key, "caption": caption, "source": str(image_path)}
        meta.update(
            original_width=original[0], original_height=original[1], width=stored[0], height=stored[1]
        )
        _add(tar, key + ".jpg", data)
        _add(tar, key + ".txt", caption.encode("utf-8"))
        _add(tar, key + ".json", json.dumps(meta).encode("utf-8"))
        if alternatives:  # training draws one per epoch (samples.pick_caption); `txt` is the eval caption
            _add(tar, key + ".captions", "\n".join(alternatives).encode("utf-8"))
        sizes[shard_name] += 1
        written += 1
        if verbose and written % 1000 == 0:
            print(f"{written} samples ({written / (time.time() - start):.0f}/s)", file=sys.stderr)
    if tar is not None:
        close_shard()
    with open(os.path.join(out_dir, SIZES_FILE), "w") as f:
        json.dump(sizes, f, indent=1)
    for path, why in skipped[:20]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    shards = [os.path.join(out_dir, name) for name in sizes]
    return {"shards": shards, "samples": written, "skipped": len(skipped)}


def write_shards_from_table(
    table,
    out_dir,
    *,
    image_column="image",
    caption_column="caption",
    image_root=None,
    samples_per_shard=1000,
    max_size=None,
    prefix="shard",
) -> dict:
    """Shards from a table (path to CSV/TSV/Parquet, or a DataFrame). Relative image paths are resolved
    against `image_root`, default the table's directory (the working directory for a DataFrame)."""
    if isinstance(table, pd.DataFrame):
        frame, root = table, image_root or os.getcwd()
    else:
        frame = read_table(str(table))
        root = image_root or os.path.dirname(os.path.abspath(str(table)))
    images = [resolve_image_path(v, str(root)) for v in frame[image_column]]
    pairs = zip(images, frame[caption_column].tolist())
    return write_shards(pairs, out_dir, samples_per_shard=samples_per_shard, max_size=max_size, prefix=prefix)


def write_shards_from_folder(
    folder, out_dir, *, samples_per_shard=1000, max_size=None, prefix="shard"
) -> dict:
    """Shards from a folder of images with same-named caption files (`cat.jpg` + `cat.txt`)."""
    listing = FolderSource(folder).build(transform=None, faults=None)
    pairs = zip(listing.images, listing.captions)
    return write_shards(pairs, out_dir, samples_per_shard=samples_per_shard, max_size=max_size, prefix=prefix)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cliplab.data.shards",
        description="Write webdataset shards (key.jpg, key.txt, key.json, sizes.json) from a table/folder.",
    )
    parser.add_argument("source", help="CSV/TSV/Parquet table, or a folder of images with .txt captions")
    parser.add_argument("out_dir", help="output directory")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument(
        "--image-root", default=None, help="base of relative image paths (default: the table dir)"
    )
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument(
        "--max-size", type=int, default=None, help="shrink so the longest side is at most this"
    )
    parser.add_argument("--prefix", default="shard")
    args = parser.parse_args(argv)
    common = {"samples_per_shard": args.samples_per_shard, "max_size": args.max_size, "prefix": args.prefix}
    if os.path.isdir(args.source):
        result = write_shards_from_folder(args.source, args.out_dir, **common)
    else:
        result = write_shards_from_table(
            args.source,
            args.out_dir,
            image_column=args.image_column,
            caption_column=args.caption_column,
            image_root=args.image_root,
            **common,
        )
    print(f"wrote {result['samples']} samples in {len(result['shards'])} shards to {args.out_dir}", end="")
    print(f" ({result['skipped']} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
