"""Fault injection: bad samples of every kind, a truncated shard and unreadable shards go through the
real data module; exactly those are reported skipped and every good sample comes out."""

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.datamodule import CLIPDataModule
from cliplab.data.transforms import eval_transform, train_transform
from cliplab.data.webdataset_source import WebDatasetSource

MAX_PIXELS = 200 * 200  # a 300x300 image counts as "too large to decode safely" here


class ByteTokenizer:
    """Stand-in tokenizer whose tokens give the caption back (so the test can see which samples came out)."""

    def __call__(self, texts):
        out = torch.zeros(len(texts), 32, dtype=torch.long)
        for i, t in enumerate(texts):
            data = t.encode()[:32]
            out[i, : len(data)] = torch.tensor(list(data))
        return out


def decode_tokens(tokens):
    return ["".join(chr(c) for c in row.tolist() if c) for row in tokens]


def jpeg(seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def write_tar(path, samples):
    """samples: list of (key, {ext: bytes})."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def good(key):
    return key, {"jpg": jpeg(hash(key) % 1000), "txt": f"good {key}".encode(), "json": b"{}"}


@pytest.fixture(scope="module")
def faulty_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    expected_faults = set()  # (kind, key or None, shard name)
    good_keys = set()

    # Shard 0 and 1: good samples with bad ones of every sample-level kind between them.
    bad = {
        "corrupt_image": ("b-corrupt", {"jpg": b"\xff\xd8 not really a jpeg", "txt": b"corrupt"}),
        "image_too_large": ("b-large", {"png": png((300, 300)), "txt": b"large"}),
        "missing_caption": ("b-nocap", {"jpg": jpeg(1)}),
        "empty_caption": ("b-emptycap", {"jpg": jpeg(2), "txt": b"  \n"}),
        "missing_image": ("b-noimage", {"txt": b"caption without image"}),
    }
    truncated_jpeg = jpeg(3, size=(64, 64))
    bad_truncated = ("b-truncjpg", {"jpg": truncated_jpeg[: len(truncated_jpeg) // 2], "txt": b"half"})
    for i, (shard, kinds) in enumerate(
        [
            ("s0.tar", ["corrupt_image", "image_too_large", "missing_caption"]),
            ("s1.tar", ["empty_caption", "missing_image"]),
        ]
    ):
        samples = []
        for j in range(6):
            samples.append(good(f"g{i}{j}"))
            good_keys.add(f"g{i}{j}")
        for kind in kinds:
            samples.insert(2, bad[kind])
            expected_faults.add((kind, bad[kind][0], shard))
        if i == 1:
            samples.append(bad_truncated)
            expected_faults.add(("corrupt_image", bad_truncated[0], shard))
        write_tar(root / shard, samples)

    # Shard 2: truncated in the middle of the 5th sample's image: the first four survive.
    samples = [good(f"t{j}") for j in range(8)]
    write_tar(root / "full.tar", samples)
    data = (root / "full.tar").read_bytes()
    cut = data.index(b"t4.jpg") + 512 + 100  # inside t4.jpg's payload
    (root / "s2.tar").write_bytes(data[:cut])
    (root / "full.tar").unlink()
    good_keys.update(f"t{j}" for j in range(4))
    expected_faults.add(("truncated_shard", "t3", "s2.tar"))

    # Shard 3: not a tar at all.
    (root / "s3.tar").write_bytes(b"garbage" * 300)
    expected_faults.add(("unreadable_shard", None, "s3.tar"))
    return root, expected_faults, good_keys


def run_through(root, num_workers, train):
    urls = f"{root}/s{{0..3}}.tar::pipe:exit 3"
    dm = CLIPDataModule(
        train=WebDatasetSource(urls) if train else None,
        val=None if train else WebDatasetSource(urls, shuffle=False),
        batch_size=1 if train else 4,
        num_workers=num_workers,
        tokenizer=ByteTokenizer(),
        train_transform=train_transform(24, max_image_pixels=MAX_PIXELS),
        val_transform=eval_transform(24, max_image_pixels=MAX_PIXELS),
        persistent_workers=False,
    )
    dm.setup("fit")
    loader = dm.train_dataloader() if train else dm.val_dataloader()
    seen = []
    for images, tokens in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 24, 24)
        seen += [c.removeprefix("good ") for c in decode_tokens(tokens)]
    return dm, seen


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("train", [False, True])
def test_faults_are_skipped_counted_and_nothing_good_is_lost(faulty_shards, num_workers, train):
    root, expected_faults, good_keys = faulty_shards
    dm, seen = run_through(root, num_workers, train)
    assert sorted(seen) == sorted(good_keys)  # each good sample exactly once
    records = dm.fault_records()
    reported = {(r["kind"], r["key"], r["shard"].rsplit("/", 1)[-1]) for r in records}
    pipe_faults = {r for r in reported if r[2] == "pipe:exit 3"}
    assert pipe_faults == {("unreadable_shard", None, "pipe:exit 3")}
    assert reported - pipe_faults == expected_faults
    assert len(records) == len(expected_faults) + 1
    summary = dm.fault_summary()
    assert summary["skipped_shards"] == 3 and summary["skipped_samples"] == len(expected_faults) - 2
    assert summary["corrupt_image"] == 2


def test_missing_shard_pattern_fails_at_startup(tmp_path):
    dm = CLIPDataModule(train=WebDatasetSource(f"{tmp_path}/nothing-{{000..009}}.tar"), batch_size=2)
    with pytest.raises(ValueError, match=r"data\.train\.urls=.*nothing-\{000\.\.009\}\.tar"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="data.train.urls"):
        CLIPDataModule(train=WebDatasetSource(""), batch_size=2).setup("fit")


def test_each_rank_counts_its_own_faults_with_every_key(tmp_path):
    """Ranks share fault_dir: each data module's summary holds its own rank's faults, under the same keys."""
    import pickle
    from types import SimpleNamespace

    from cliplab.data.faults import SUMMARY_KEYS, FaultLog

    modules = []
    for rank in (0, 1):
        dm = CLIPDataModule(train=WebDatasetSource(f"{tmp_path}/none.tar"), fault_dir=tmp_path, batch_size=2)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        with pytest.raises(ValueError, match="data.train.urls"):  # no shards: the rank is bound first
            dm.setup("fit")
        modules.append(dm)
    for _ in range(2):
        modules[0].faults.record("corrupt_image", "s0.tar", "k")
    modules[1].faults.record("truncated_shard", "s1.tar", None)
    assert (
        modules[0].faults.directory == str(tmp_path / "rank0")
        and modules[0].faults.for_rank(0) is modules[0].faults
    )
    zero = dict.fromkeys(SUMMARY_KEYS, 0)
    assert modules[0].fault_summary() == {**zero, "corrupt_image": 2, "skipped_samples": 2}
    assert modules[1].fault_summary() == {**zero, "truncated_shard": 1, "skipped_shards": 1}
    assert pickle.loads(pickle.dumps(modules[1].faults)).summary() == modules[1].fault_summary()  # a worker's
    assert FaultLog(tmp_path).summary() == zero  # the shared root itself holds no rank's faults
    with pytest.raises(ValueError, match="unknown data fault kind 'bad'"):
        modules[0].faults.record("bad", None, None)
