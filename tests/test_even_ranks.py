"""Even ranks and exact resume of the data streams, rank by rank in one process (the multi-process runs
are in test_runs_survive.py): equal batch counts for uneven shards, fewer shards than readers, skipped
samples, tables and evaluation splits; a loader restored from its state continues exactly."""

import io
import itertools
import json
import tarfile
import types
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.datamodule import CLIPDataModule
from cliplab.data.stream_plan import deal, slot_shards
from cliplab.data.transforms import eval_transform, train_transform
from cliplab.data.webdataset_source import WebDatasetSource
from cliplab.utils.errors import DataError

SHARD_SIZES = [9, 7, 12, 3, 5]  # uneven on purpose: 36 samples


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path, keys, corrupt=()):
    with tarfile.open(path, "w") as tar:
        for key in keys:
            for ext, data in (("png", b"not an image" if key in corrupt else png(hash(key) % 1000)),
                              ("txt", f"caption {key}".encode())):  # fmt: skip
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven")
    sizes, n = {}, 0
    for i, size in enumerate(SHARD_SIZES):
        keys = [f"s{n + j:03d}" for j in range(size)]
        n += size
        write_shard(root / f"shard-{i}.tar", keys, corrupt={"s010"})  # one corrupt sample in shard 1
        sizes[f"shard-{i}.tar"] = size
    (root / "sizes.json").write_text(json.dumps(sizes))
    return root


def module(source, rank, world, batch, workers, val=None, **kwargs):
    dm = CLIPDataModule(
        train=source,
        val=val,
        batch_size=batch * world,
        num_workers=workers,
        persistent_workers=False,
        train_transform=train_transform(16),
        val_transform=eval_transform(16),
        **kwargs,
    )
    dm.trainer = types.SimpleNamespace(global_rank=rank, world_size=world)
    dm.setup("fit")
    return dm


def captions(loader):
    return [list(caps) for _, caps in loader]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [2, 4])
def test_uneven_shards_give_every_rank_the_same_batches(shards, world, workers):
    per_rank = []
    for rank in range(world):
        loader = module(WebDatasetSource(str(shards)), rank, world, 2, workers).train_dataloader()
        batches = captions(loader)
        assert len(batches) == len(loader) > 0  # the loader's length is what it yields
        assert all(len(b) == 2 for b in batches)
        per_rank.append([c for b in batches for c in b])
    assert len({len(p) for p in per_rank}) == 1
    everything = [c for p in per_rank for c in p]
    assert len(everything) == len(set(everything)), "no sample twice in one epoch"


def test_fewer_shards_than_readers_split_samples(tmp_path):
    write_shard(tmp_path / "only.tar", [f"k{i}" for i in range(13)])
    (tmp_path / "sizes.json").write_text(json.dumps({"only.tar": 13}))
    seen = []
    for rank in range(2):
        batches = captions(module(WebDatasetSource(str(tmp_path)), rank, 2, 2, 2).train_dataloader())
        assert len(batches) == 2  # 4 readers of about 3 samples: one batch of 2 each
        seen += [c for b in batches for c in b]
    assert len(seen) == 8 == len(set(seen))


def test_a_rank_short_of_samples_after_faults_still_yields_its_batches(tmp_path):
    # Two shards of 4, batch 4, two ranks: each rank's quota is its whole shard; rank 1's has a
    # corrupt sample, so it re-reads (counted in the log) instead of leaving rank 0 waiting.
    write_shard(tmp_path / "a.tar", ["a0", "a1", "a2", "a3"])
    write_shard(tmp_path / "b.tar", ["b0", "b1", "b2", "b3"], corrupt={"b2"})
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 4, "b.tar": 4}))
    counts = [
        len(captions(module(WebDatasetSource(str(tmp_path)), r, 2, 4, 0).train_dataloader())) for r in (0, 1)
    ]
    assert counts == [1, 1]


def test_tables_give_every_rank_the_same_batches(tmp_path):
    import pandas as pd

    (tmp_path / "img").mkdir()
    for i in range(11):
        Image.new("RGB", (20, 20), (i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    pd.DataFrame(
        {"image": [f"img/{i}.png" for i in range(11)], "caption": [f"c{i}" for i in range(11)]}
    ).to_csv(tmp_path / "t.csv", index=False)
    train, val = [], []
    for rank in range(2):
        dm = module(str(tmp_path / "t.csv"), rank, 2, 2, 0, val=str(tmp_path / "t.csv"))
        train.append(captions(dm.train_dataloader()))
        val.append(captions(dm.val_dataloader()))
    assert len(train[0]) == len(train[1]) == 2
    assert len(val[0]) == len(val[1]) == 3  # 6 and 5 samples in 3 batches each
    assert sorted(c for v in val for b in v for c in b) == sorted(f"c{i}" for i in range(11))


@pytest.mark.parametrize("workers", [0, 2])
def test_validation_streams_every_sample_once_in_equal_batch_counts(shards, workers):
    seen, counts = [], []
    for rank in range(2):
        source = WebDatasetSource(str(shards), shuffle=False)
        batches = captions(module(None, rank, 2, 4, workers, val=source).val_dataloader())
        counts.append(len(batches))
        seen += [c for b in batches for c in b]
    assert counts[0] == counts[1] == 5  # 18 samples per rank in batches of at most 4
    expected = [f"caption s{i:03d}" for i in range(36) if i != 10]  # the corrupt one is skipped
    assert sorted(seen) == expected


def images_and_captions(loader, stop=None):
    """The (images, captions) of the loader's next `stop` batches (all when None)."""
    return [(images.clone(), list(caps)) for images, caps in itertools.islice(loader, stop)]


@pytest.mark.parametrize(
    "workers, resampled", [(0, False), (2, False), (2, True)], ids=["main", "workers", "resampled"]
)
def test_a_restored_loader_continues_exactly(shards, workers, resampled):
    def source():
        return WebDatasetSource(
            str(shards), shuffle_buffer=5, resampled=resampled, samples_per_epoch=40 if resampled else None
        )

    straight = module(source(), 0, 1, 3, workers).train_dataloader()
    epoch0, epoch1 = images_and_captions(straight), images_and_captions(straight)
    assert [c for _, c in epoch0] != [c for _, c in epoch1], "epochs reshuffle"

    first = module(source(), 0, 1, 3, workers).train_dataloader()
    images_and_captions(first, stop=4)  # four batches, then the run dies
    state = first.state_dict()
    for _ in range(2):  # a state can be loaded twice: both resumes continue the same way
        resumed = module(source(), 0, 1, 3, workers).train_dataloader()
        resumed.load_state_dict(state)
        rest = images_and_captions(resumed)
        expected = epoch0[4:]
        assert [c for _, c in rest] == [c for _, c in expected]
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(rest, expected)), "same crops after resume"
        assert [c for _, c in images_and_captions(resumed)] == [c for _, c in epoch1]


def test_an_end_of_epoch_state_starts_the_next_epoch(shards):
    straight = module(WebDatasetSource(str(shards)), 0, 1, 3, 0).train_dataloader()
    images_and_captions(straight)
    state = straight.state_dict()
    epoch1 = [c for _, c in images_and_captions(straight)]
    resumed = module(WebDatasetSource(str(shards)), 0, 1, 3, 0).train_dataloader()
    resumed.load_state_dict(state)
    assert [c for _, c in images_and_captions(resumed)] == epoch1


def test_shards_are_dealt_by_size_and_batches_round_robin():
    sizes = {"a": 10, "b": 6, "c": 5, "d": 4, "e": 1}
    groups = slot_shards(list(sizes), sizes, 2)
    # largest first to the least-filled slot: 10+4 and 6+5+1
    assert [sum(sizes[s] for s in g) for g, _, _ in groups] == [14, 12]
    assert deal(5, [3, 1, 3]) == [2, 1, 2]
    with pytest.raises(ValueError):
        deal(5, [1, 1])
    assert Counter(deal(7, [7, 7, 7])) == Counter([3, 2, 2])


def test_an_empty_shard_is_just_fewer_samples(tmp_path):
    write_shard(tmp_path / "a.tar", [f"a{i}" for i in range(6)])
    write_shard(tmp_path / "empty.tar", [])
    write_shard(tmp_path / "b.tar", [f"b{i}" for i in range(7)])
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 6, "empty.tar": 0, "b.tar": 7}))
    counts = [
        len(captions(module(WebDatasetSource(str(tmp_path)), r, 2, 2, 0).train_dataloader())) for r in (0, 1)
    ]
    assert counts == [3, 3]


def test_a_shard_deleted_mid_run_leaves_the_ranks_even(tmp_path, caplog):
    for name in "abcd":
        write_shard(tmp_path / f"{name}.tar", [f"{name}{i}" for i in range(6)])
    (tmp_path / "sizes.json").write_text(json.dumps({f"{n}.tar": 6 for n in "abcd"}))
    loaders = [module(WebDatasetSource(str(tmp_path)), r, 2, 2, 0).train_dataloader() for r in (0, 1)]
    (tmp_path / "d.tar").unlink()  # after start-up, as a storage failure would
    counts = [len(captions(loader)) for loader in loaders]
    assert counts == [
        6,
        6,
    ]  # the rank that lost a shard re-reads the other (logged), the other waits for nothing
    assert "samples repeat this epoch" in caplog.text


def test_a_slot_whose_shards_all_vanish_stops_with_one_line(tmp_path):
    write_shard(tmp_path / "a.tar", ["a0", "a1"])
    write_shard(tmp_path / "b.tar", ["b0", "b1"])
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 2, "b.tar": 2}))
    loader = module(WebDatasetSource(str(tmp_path)), 1, 2, 2, 0).train_dataloader()
    (tmp_path / "b.tar").unlink()
    (tmp_path / "a.tar").unlink()
    with pytest.raises(DataError, match="readable samples of a quota of 2") as err:
        captions(loader)
    assert "\n" not in str(err.value)
