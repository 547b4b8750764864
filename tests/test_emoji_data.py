"""The emoji data set builder: deterministic, split as designed, images valid, corruption detected.

Builds a 40-concept subset (a second or so) into temporary caches; the fetched wheels are shared
through the user's download cache so only the first run on a machine touches the registry.
"""

import csv
import json

import pytest
from PIL import Image

from cliplab.data import emoji as emoji_data
from cliplab.data.emoji import captions, fetch, render
from cliplab.data.emoji.__main__ import main
from cliplab.utils.paths import cache_dir

LIMIT = 40


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def downloads():
    return cache_dir() / "downloads"  # the real cache: fetched once per machine


@pytest.fixture(scope="module")
def built(tmp_path_factory, downloads):
    """Two independent builds of the same subset."""
    roots = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(name) / "emoji"
        roots.append(
            emoji_data.build(64, limit=LIMIT, out_dir=out, downloads=downloads, progress=lambda _: None)
        )
    return roots


def test_two_builds_are_identical(built):
    a, b = built
    manifest_a = json.loads((a / "manifest.json").read_text())
    manifest_b = json.loads((b / "manifest.json").read_text())
    assert manifest_a == manifest_b
    for name in manifest_a["tables"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for row in _read(a / "train.csv")[:10]:
        assert (a / row["image"]).read_bytes() == (b / row["image"]).read_bytes()


def test_splits_hold_out_a_style_and_concepts(built):
    root = built[0]
    info = json.loads((root / "manifest.json").read_text())
    holdout = info["styles"]["holdout"]
    train, val = _read(root / "train.csv"), _read(root / "val.csv")
    assert train and val
    assert holdout == "twemoji"
    assert {r["style"] for r in train} == set(info["styles"]["train"]) and holdout not in info["styles"][
        "train"
    ]
    assert {r["split"] for r in train} == {"train"}
    assert {r["style"] for r in val} == {holdout}
    assert {r["split"] for r in val} == {"val", "val_novel"}
    seen = {r["concept"] for r in val if r["split"] == "val"}
    novel = {r["concept"] for r in val if r["split"] == "val_novel"}
    train_concepts = {r["concept"] for r in train}
    assert not novel & train_concepts, "a held-out concept leaked into training"
    assert seen == train_concepts
    assert len(novel) == round(0.2 * info["counts"]["concepts"])
    assert len({r["concept"] for r in val}) == len(val), "val.csv has one image per concept"
    assert not {r["image"] for r in train} & {r["image"] for r in val}


def test_zeroshot_benchmarks_are_consistent(built):
    root = built[0]
    info = json.loads((root / "manifest.json").read_text())
    train_concepts = {r["concept"] for r in _read(root / "train.csv")}
    assert [t for t in (root / "templates.txt").read_text().splitlines()] == list(captions.TEMPLATES)
    for bench in ("style", "novel", "group"):
        classnames = (root / f"classnames_{bench}.txt").read_text().splitlines()
        rows = _read(root / f"zeroshot_{bench}.csv")
        assert rows and len(set(classnames)) == len(classnames)
        for r in rows:
            assert classnames[int(r["label"])] == r["classname"]
        assert info["zeroshot"][bench]["chance_top1"] == pytest.approx(1 / len(classnames))
    assert set((root / "classnames_style.txt").read_text().splitlines()) == train_concepts
    assert not set((root / "classnames_novel.txt").read_text().splitlines()) & train_concepts
    assert {r["style"] for r in _read(root / "zeroshot_style.csv")} == {"twemoji"}


def test_images_open_with_the_right_size_and_captions_are_not_empty(built):
    root = built[0]
    rows = _read(root / "train.csv") + _read(root / "val.csv")
    for r in rows:
        with Image.open(root / r["image"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
        assert r["caption"].strip() and r["concept"] in r["caption"]
        assert r["group"] and r["subgroup"]
    assert (root / "NOTICE").read_text().count("OpenMoji") >= 1
    assert "held-out style" in (root / "README.md").read_text()


def test_dataset_dir_rejects_missing_or_corrupt_builds(tmp_path, monkeypatch, downloads):
    monkeypatch.setenv("CLIPLAB_CACHE", str(tmp_path))
    with pytest.raises(emoji_data.CorruptDataset, match="python -m cliplab.data.emoji"):
        emoji_data.dataset_dir(64, limit=LIMIT)
    root = emoji_data.build(64, limit=LIMIT, downloads=downloads, progress=lambda _: None)
    assert emoji_data.dataset_dir(64, limit=LIMIT) == root
    assert emoji_data.build(64, limit=LIMIT, downloads=downloads, progress=lambda _: None) == root  # reused

    with (root / "train.csv").open("a") as f:
        f.write("images/x.png,extra,extra,x,x,x,train\n")
    with pytest.raises(emoji_data.CorruptDataset, match="train.csv") as err:
        emoji_data.dataset_dir(64, limit=LIMIT)
    assert "\n" not in str(err.value) and "--limit 40 --force" in str(err.value)

    (root / "manifest.json").write_text("{not json")
    with pytest.raises(emoji_data.CorruptDataset, match="manifest"):
        emoji_data.dataset_dir(64, limit=LIMIT)

    emoji_data.build(64, limit=LIMIT, downloads=downloads, progress=lambda _: None)  # repairs itself
    next((root / "images").rglob("*.png")).unlink()
    with pytest.raises(emoji_data.CorruptDataset, match="images"):
        emoji_data.dataset_dir(64, limit=LIMIT)


def test_extra_styles_without_npm_is_a_message_not_a_failure(tmp_path, monkeypatch, downloads):
    def no_npm(name, version, where):
        raise fetch.SourceUnavailable(f"npm is not installed, so {name}@{version} cannot be fetched")

    monkeypatch.setattr(fetch, "npm_pack", no_npm)
    said = []
    root = emoji_data.build(
        64, limit=LIMIT, extra_styles=True, out_dir=tmp_path / "e", downloads=downloads, progress=said.append
    )
    assert any("npm is not installed" in line for line in said)
    assert json.loads((root / "manifest.json").read_text())["styles"]["holdout"] == "twemoji"


def test_npm_pack_without_npm_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda _: None)
    with pytest.raises(fetch.SourceUnavailable, match="npm is not installed"):
        fetch.npm_pack("@iconify-json/noto", "1.2.9", tmp_path)


def test_cli_builds_into_an_explicit_folder(tmp_path, capsys):
    assert main(["--limit", "12", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "manifest.json").is_file()
    with pytest.raises(SystemExit):
        main(["--limit", "12", "--holdout-style", "nope"])


def test_codepoint_keys_agree_across_spellings():
    assert fetch.codepoint_key("0023-FE0F-20E3") == fetch.codepoint_key("23-20e3") == "23-20e3"
    assert fetch.codepoint_key("1F1EB_1F1F7") == "1f1eb-1f1f7"


def test_line_art_keeps_only_the_outline_layer():
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><g id="color">'
        b'<rect x="0" y="0" width="72" height="72" fill="#ff0000"/></g><g id="line">'
        b'<circle cx="36" cy="36" r="20" fill="none" stroke="#000" stroke-width="2"/></g></svg>'
    )
    line = render.openmoji_line_art(svg)
    assert b"#ff0000" not in line and b"circle" in line
    image = render.render_svg(line, 32)
    assert image.getpixel((1, 1)) == (255, 255, 255)  # the colour layer is gone, white shows


def test_keywords_add_information_beyond_the_name():
    words = captions.keywords(
        "\u2614", "umbrella with rain drops", ("umbrella_with_rain_drops",), "sky & weather"
    )
    assert "umbrella with rain drops" not in words
    assert {"sky", "weather"} <= set(words)


def test_concurrent_builds_of_one_folder_take_turns(tmp_path, downloads):
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "shared"
    run = lambda _: emoji_data.build(64, limit=12, out_dir=out, downloads=downloads, progress=lambda _: None)
    with ThreadPoolExecutor(2) as pool:
        roots = list(pool.map(run, range(2)))
    assert roots == [out, out]
    assert json.loads((out / "manifest.json").read_text())["counts"]["concepts"] > 0
    assert not out.with_name("shared.partial").exists()
