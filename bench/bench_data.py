"""Images/second through the full training input pipeline, cliplab vs open_clip, on the same shards.

Both pipelines read the same seeded synthetic JPEG shards (short side 256 and 512 px), decode, apply
the CLIP train augmentation (random resized crop 0.9-1, bicubic, 224 px, CLIP mean/std), tokenize
(77 tokens) and batch (128). Output semantics are checked before timing. The machine may be shared, so
each configuration is timed `--repeats` times, the two sides alternating (and swapping which goes first);
the table gives the median ratio and the range of the per-round ratios. Run:

    python bench/bench_data.py [--samples 1536] [--workers 1 2] [--sizes 256 512] [--repeats 3]
"""

import argparse
import functools
import io
import json
import os
import tarfile
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from cliplab.data.datamodule import CLIPDataModule
from cliplab.data.transforms import CLIP_MEAN, CLIP_STD
from cliplab.data.webdataset_source import WebDatasetSource
from cliplab.models.tokenizer import CLIPTokenizer

IMAGE_SIZE = 224
BATCH = 128
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "blue",
    "small",
    "large",
    "dog",
    "cat",
    "car",
    "tree",
    "house",
    "on",
    "in",
    "with",
    "near",
    "beach",
    "city",
    "night",
]


def synthetic_jpeg(rng, short_side: int) -> bytes:
    """Photo-like: smooth colour field plus noise, random aspect ratio up to 4:3."""
    long_side = int(short_side * rng.uniform(1.0, 4 / 3))
    w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    base = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    noise = rng.normal(0, 12, (h, w, 3))
    array = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_synthetic_shards(out_dir: str, short_side: int, samples: int, per_shard: int = 256) -> str:
    rng = np.random.default_rng(short_side)
    os.makedirs(out_dir, exist_ok=True)
    sizes = {}
    for shard in range((samples + per_shard - 1) // per_shard):
        name = f"{shard:05d}.tar"
        with tarfile.open(os.path.join(out_dir, name), "w") as tar:
            count = min(per_shard, samples - shard * per_shard)
            for i in range(count):
                key = f"{shard:05d}{i:04d}"
                caption = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 12))))
                for ext, data in (("jpg", synthetic_jpeg(rng, short_side)), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        sizes[name] = count
    with open(os.path.join(out_dir, "sizes.json"), "w") as f:
        json.dump(sizes, f)
    return os.path.join(out_dir, f"{{00000..{len(sizes) - 1:05d}}}.tar")


def cliplab_loader(pattern: str, samples: int, workers: int):
    dm = CLIPDataModule(
        train=WebDatasetSource(pattern, samples_per_epoch=samples),
        batch_size=BATCH,
        num_workers=workers,
        image_size=IMAGE_SIZE,
        tokenizer=CLIPTokenizer(context_length=77),
        persistent_workers=False,
        pin_memory=False,
    )
    dm.setup("fit")
    return dm.train_dataloader()


def open_clip_loader(pattern: str, samples: int, workers: int):
    import open_clip_train.data as open_clip_data  # noqa: PLC0415
    from open_clip.tokenizer import SimpleTokenizer  # noqa: PLC0415
    from open_clip.transform import image_transform  # noqa: PLC0415
    from webdataset.tariterators import tar_file_expander  # noqa: PLC0415

    # webdataset >= 1.0 ends each shard with an empty "EOF" sample that open_clip 3.3's grouping cannot
    # handle (KeyError 'fname'); turning the marker off restores the behaviour open_clip was written for.
    open_clip_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)

    args = SimpleNamespace(
        train_data=pattern,
        val_data=None,
        train_num_samples=samples,
        dataset_resampled=False,
        train_data_upsampling_factors=None,
        seed=0,
        batch_size=BATCH,
        workers=workers,
        world_size=1,
    )
    preprocess = image_transform(IMAGE_SIZE, is_train=True, mean=CLIP_MEAN, std=CLIP_STD)
    info = open_clip_data.get_wds_dataset(
        args, preprocess, is_train=True, floor=True, tokenizer=SimpleTokenizer(context_length=77)
    )
    return info.dataloader


def check_semantics(ours, theirs) -> None:
    (a_img, a_tok), (b_img, b_tok) = ours, theirs
    assert a_img.shape == b_img.shape == (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), (a_img.shape, b_img.shape)
    assert a_img.dtype == b_img.dtype == torch.float32
    assert a_tok.shape == b_tok.shape and a_tok.dtype == b_tok.dtype == torch.long
    # Different samples (independent shuffles), same distribution: per-channel statistics agree.
    for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
        assert torch.allclose(stat(a_img), stat(b_img), atol=0.1), (stat(a_img), stat(b_img))
    caption = ["a photo of the red dog near the beach at night"]
    from open_clip.tokenizer import SimpleTokenizer  # noqa: PLC0415

    assert torch.equal(CLIPTokenizer(77)(caption), SimpleTokenizer(context_length=77)(caption))


def images_per_second(loader, warmup_batches: int = 2) -> float:
    it = iter(loader)
    for _ in range(warmup_batches):  # worker start-up and shuffle-buffer fill are not throughput
        next(it)
    count, start = 0, time.perf_counter()
    for images, _ in it:
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pattern = write_synthetic_shards(os.path.join(tmp, str(size)), size, args.samples)
            check_semantics(
                next(iter(cliplab_loader(pattern, args.samples, 0))),
                next(iter(open_clip_loader(pattern, args.samples, 0))),
            )
            for workers in args.workers:
                ours, theirs = [], []
                for round_ in range(args.repeats):
                    # Alternate which side runs first, so a load change on the machine hits both alike.
                    sides = [(theirs, open_clip_loader), (ours, cliplab_loader)]
                    for results, make in sides[:: 1 if round_ % 2 == 0 else -1]:
                        results.append(images_per_second(make(pattern, args.samples, workers)))
                    print(
                        f"short side {size}, {workers} workers, round {round_ + 1}: "
                        f"cliplab {ours[-1]:.0f}, open_clip {theirs[-1]:.0f} img/s"
                    )
                rows.append((size, workers, ours, theirs))
    print(
        "\n| short side | workers | cliplab img/s | open_clip img/s | ratio (median) | ratio range |"
        "\n|---|---|---|---|---|---|"
    )
    for size, workers, ours, theirs in rows:
        ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
        print(
            f"| {size} | {workers} | {np.median(ours):.0f} | {np.median(theirs):.0f} "
            f"| {np.median(ratios):.2f}x | {ratios[0]:.2f}-{ratios[-1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
