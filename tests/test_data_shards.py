"""Shard writer and tar reader: round trip, sizes.json, resizing, CLI, agreement with tarfile."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cliplab.data import shards
from cliplab.data.shard_lists import expand_shards, shard_sizes
from cliplab.data.tar_reader import TruncatedTar, iter_tar_members, iter_tar_samples


@pytest.fixture
def table(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(7):
        size = (90, 60) if i % 2 else (40, 50)
        Image.new("RGBA" if i == 0 else "RGB", size, (i * 30, 10, 200)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "caption": f"colour number {i}"})
    rows.append({"image": "img/missing.png", "caption": "no such file"})
    rows.append({"image": "img/1.png", "caption": ""})
    path = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_write_shards_from_table_round_trip(table, tmp_path):
    out = tmp_path / "shards"
    result = shards.write_shards_from_table(table, out, samples_per_shard=3, max_size=64, prefix="train")
    assert result["samples"] == 7 and result["skipped"] == 2
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"train-00000.tar": 3, "train-00001.tar": 3, "train-00002.tar": 1}
    assert not list(out.glob("*.tmp"))
    captions = []
    for name in sizes:
        with open(out / name, "rb") as f:
            for sample in iter_tar_samples(f):
                assert set(sample) == {"__key__", "jpg", "txt", "json"}
                img = Image.open(io.BytesIO(sample["jpg"]))
                assert img.format == "JPEG" and max(img.size) <= 64
                meta = json.loads(sample["json"])
                assert meta["key"] == sample["__key__"] and meta["caption"] == sample["txt"].decode()
                captions.append(sample["txt"].decode())
    assert captions == [f"colour number {i}" for i in range(7)]
    # The expanded list and sizes agree, whichever way the shards are named.
    for spec in (str(out), str(out / "sizes.json"), f"{out}/train-{{00000..00002}}.tar", f"{out}/*.tar"):
        urls = expand_shards(spec)
        assert len(urls) == 3 and sum(shard_sizes(urls).values()) == 7


def test_cli(table, tmp_path, capsys):
    assert (
        shards.main([str(table), str(tmp_path / "cli"), "--samples-per-shard", "4", "--max-size", "32"]) == 0
    )
    assert "wrote 7 samples in 2 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        shards.main(["--help"])


def test_folder_input(tmp_path):
    for i in range(3):
        Image.new("RGB", (20, 20)).save(tmp_path / f"{i}.jpg")
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    result = shards.write_shards_from_folder(tmp_path, tmp_path / "out")
    assert result["samples"] == 3


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reader_agrees_with_tarfile(tmp_path, fmt):
    rng = np.random.default_rng(0)
    members = {
        f"{'d' * 120 if i == 2 else 'dir'}/k{i}.{ext}": rng.bytes(int(rng.integers(0, 2000)))
        for i in range(5)
        for ext in ("jpg", "txt")
    }
    members["dir/ünïcode.txt"] = b"x"
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        assert dict(iter_tar_members(f)) == members
    with pytest.raises(TruncatedTar):
        list(iter_tar_members(io.BytesIO(path.read_bytes()[:1500])))
