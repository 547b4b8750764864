"""Images/second through the full training input pipeline, cliplab vs open_clip, on the same shards.

Both pipelines read the same seeded synthetic JPEG shards (short side 256 and 512 px), decode, apply
the CLIP train augmentation (random resized crop 0.9-1, bicubic, 224 px, CLIP mean/std), tokenize
and batch (128), with 1 or 2 loader workers. cliplab: `CLIPDataModule` + `WebDatasetSource`; open_clip:
`open_clip_train.data.get_wds_dataset` with its train transform and tokenizer. Two warm-up batches, then
images/s over the rest of 1,536 samples. Gate: the root mean square of the first batch's pixels within
2 % (different samples from independent shuffles, the same normalisation).

    python -m bench data [--quick]
"""

import functools
import io
import json
import os
import sys
import tarfile
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


def open_clip_wds_data():
    """`open_clip_train.data`, patched for webdataset >= 1.0."""
    import open_clip_train.data as open_clip_data  # noqa: PLC0415
    from webdataset.tariterators import tar_file_expander  # noqa: PLC0415

    # webdataset >= 1.0 ends each shard with an empty "EOF" sample that open_clip 3.3's grouping cannot
    # handle (KeyError 'fname'); turning the marker off restores the behaviour open_clip was written for.
    open_clip_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)
    return open_clip_data


# open_clip_train's arguments that every run here shares: one process, no validation set, no resampling.
OPEN_CLIP_FIXED = dict(
    val_data=None, dataset_resampled=False, train_data_upsampling_factors=None, seed=0, world_size=1
)


def open_clip_dataset(
    pattern: str,
    samples: int,
    workers: int,
    batch: int = BATCH,
    image_size: int = IMAGE_SIZE,
    context: int = 77,
):
    """open_clip_train's training webdataset over `pattern` (its DataInfo), built as its main builds it."""
    from open_clip.tokenizer import SimpleTokenizer  # noqa: PLC0415
    from open_clip.transform import image_transform  # noqa: PLC0415

    args = SimpleNamespace(
        train_data=pattern, train_num_samples=samples, batch_size=batch, workers=workers, **OPEN_CLIP_FIXED
    )
    preprocess = image_transform(image_size, is_train=True, mean=CLIP_MEAN, std=CLIP_STD)
    tokenizer = SimpleTokenizer(context_length=context)
    return open_clip_wds_data().get_wds_dataset(
        args, preprocess, is_train=True, floor=True, tokenizer=tokenizer
    )


def open_clip_loader(pattern: str, samples: int, workers: int):
    return open_clip_dataset(pattern, samples, workers).dataloader


def worker(spec: dict) -> dict:
    torch.set_num_threads(1)  # decoding runs in the loader's worker processes; this one only collects
    make = cliplab_loader if spec["side"] == "cliplab" else open_clip_loader
    start = time.perf_counter()
    batches = iter(make(spec["pattern"], spec["samples"], spec["workers"]))
    images, tokens = next(batches)
    next(batches)  # two warm-up batches: worker start-up and the shuffle buffer's fill are not throughput
    warmup_s = time.perf_counter() - start
    # Semantics before timing: CLIP-normalised 224 px float images, token ids (cliplab's stop at the
    # batch's longest caption, open_clip's at 77); the gate compares the pixel RMS (scale and offset).
    if images.shape != (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE) or images.dtype != torch.float32:
        raise ValueError(f"images {tuple(images.shape)} {images.dtype}")
    if tokens.dtype != torch.long or tokens.shape[0] != BATCH or tokens.shape[1] > 77:
        raise ValueError(f"tokens {tuple(tokens.shape)} {tokens.dtype}")
    count, start = 0, time.perf_counter()
    for images_, _ in batches:
        count += images_.shape[0]
    return {
        "images_per_s": count / (time.perf_counter() - start),
        "pixel_rms": float(images.square().mean().sqrt()),
        "warmup_s": warmup_s,
    }


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.harness import Case

    if device.startswith("cuda"):
        return []  # the input pipeline runs on the CPU either way
    samples = 512 if quick else 1536
    grid = [(256, 1)] if quick else [(256, 1), (256, 2), (512, 1), (512, 2)]
    out, patterns = [], {}
    for size, workers in grid:
        if size not in patterns:
            patterns[size] = write_synthetic_shards(os.path.join(state_dir, f"data-{size}"), size, samples)
        out.append(
            Case(
                name=f"data pipeline {size} px JPEGs to 224 px batches, {workers} worker(s)",
                module="bench.bench_data",
                spec=dict(pattern=patterns[size], samples=samples, workers=workers),
                metric="images_per_s",
                unit="images/s",
                # different samples (independent shuffles), same distribution: the batch's pixel RMS moves
                # with a wrong scale or mean (the first batches' spread measured under 1 %)
                gate_key="pixel_rms",
                gate_rtol=0.02,
            )
        )
    return out


if __name__ == "__main__":
    from bench.entry import benchmark_main

    sys.exit(benchmark_main("data", __doc__, worker))
