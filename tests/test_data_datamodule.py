"""The data module end to end: sources, per-device batches, disjoint rank/worker streams, resampling."""

import types
from collections import Counter

import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cliplab.data.datamodule import CLIPDataModule
from cliplab.data.folder_source import FolderSource
from cliplab.data.samples import Collate
from cliplab.data.shards import write_shards_from_table
from cliplab.data.transforms import eval_transform
from cliplab.data.webdataset_source import EvenSplitStream, WebDatasetSource

try:
    from cliplab.models.tokenizer import CLIPTokenizer

    TOKENIZER = CLIPTokenizer(context_length=32)
except ImportError:  # pragma: no cover - the tokenizer lives in another area
    TOKENIZER = None


def make_table(root, name, n, word):
    (root / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (40 + i % 5, 36), (i % 255, 40, 90)).save(root / "img" / f"{word}{i}.png")
        rows.append({"image": f"img/{word}{i}.png", "caption": f"{word} {i}"})
    pd.DataFrame(rows).to_csv(root / name, index=False)
    return root / name


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    a = make_table(root, "a.csv", 40, "apple")
    b = make_table(root, "b.csv", 20, "banana")
    write_shards_from_table(a, root / "a", samples_per_shard=5)
    write_shards_from_table(b, root / "b", samples_per_shard=5)
    return root


def captions_of(dataset, num_workers):
    batch_size = None if isinstance(dataset, EvenSplitStream) else 4  # evaluation streams yield batches
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=Collate(eval_transform(16))
    )
    return [c for _, caps in loader for c in caps]


@pytest.mark.skipif(TOKENIZER is None, reason="tokenizer not available")
@pytest.mark.parametrize("kind", ["table", "folder", "shards"])
def test_batches_follow_the_contract(data, kind, tmp_path):
    if kind == "folder":
        for i in range(6):
            Image.new("RGB", (30, 20)).save(tmp_path / f"{i}.jpg")
            (tmp_path / f"{i}.txt").write_text(f"thing {i}")
        train = FolderSource(tmp_path)
    else:
        train = str(data / "a.csv") if kind == "table" else str(data / "a")
    dm = CLIPDataModule(
        train=train, val=train, batch_size=4, num_workers=0, image_size=32, tokenizer=TOKENIZER
    )
    dm.setup("fit")
    images, tokens = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    # tokens stop at the longest caption of the batch (trim_padding), rounded up to a multiple of 8
    assert tokens.shape[0] == 4 and tokens.shape[1] in (8, 16, 24, 32) and tokens.dtype == torch.long
    assert (tokens[:, -8:] != 0).any()  # no all-padding block of columns left at the end
    assert images.min() > -2.5 and images.max() < 2.7  # normalised with the CLIP mean/std
    assert len(dm.train_dataloader()) == (6 if kind == "folder" else 40) // 4
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (3, 32, 32)


def test_global_batch_is_split_over_devices(data):
    dm = CLIPDataModule(train=str(data / "a"), batch_size=8, num_workers=0, image_size=16)
    dm.trainer = types.SimpleNamespace(global_rank=1, world_size=2)
    dm.setup("fit")
    assert dm.per_device_batch_size == 4
    assert len(dm.train_dataloader()) == 40 // 8  # same number of steps on every rank
    dm = CLIPDataModule(train=str(data / "a"), batch_size=6, image_size=16)
    dm.trainer = types.SimpleNamespace(global_rank=0, world_size=4)
    with pytest.raises(ValueError, match="not divisible"):
        dm.setup("fit")


def test_ranks_and_workers_read_disjoint_streams_covering_everything(data):
    source = WebDatasetSource(str(data / "a"))
    seen = []
    for rank in range(2):
        dataset = source.build(eval_transform(16), None, rank=rank, world_size=2, train=False)
        seen += captions_of(dataset, num_workers=2)
    assert sorted(seen) == sorted(f"apple {i}" for i in range(40))


def test_training_epochs_reshuffle(data):
    dataset = WebDatasetSource(str(data / "a"), shuffle_buffer=10).build(eval_transform(16), None)
    first, second = captions_of(dataset, 0), captions_of(dataset, 0)
    assert sorted(first) == sorted(second) and first != second


def test_resampled_mixture_follows_weights_and_epoch_length(data):
    source = WebDatasetSource(
        [str(data / "a"), str(data / "b")], weights=[3, 1], resampled=True, samples_per_epoch=1200
    )
    dm = CLIPDataModule(train=source, batch_size=8, num_workers=2, image_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 150 and dm.samples_per_epoch == 1200
    words = Counter()
    batches = 0
    for _, captions in loader:
        batches += 1
        words.update(c.split()[0] for c in captions)
    assert batches == 150
    assert 0.68 < words["apple"] / 1200 < 0.82  # 3:1 by shard draws of equal-sized shards
