"""The evaluation's pictures: each drawn from known inputs, written as a real PNG, linked from results.md
and handed to W&B; the data feeding them comes from the evaluators' own runs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD
from cliplab.eval.pictures.data import KShotCurve, PerClassAccuracy, RetrievalExamples, shots_matching
from cliplab.eval.pictures.kshot import kshot_figure
from cliplab.eval.pictures.per_class import per_class_figure
from cliplab.eval.pictures.retrieval_sheet import retrieval_sheet_figure
from cliplab.eval.pictures.write import log_pictures, pictures_markdown, write_pictures
from cliplab.eval.report import write_results
from cliplab.eval.run import RetrievalAccumulator


def assert_png(path, min_side: int = 100):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_side


def normalised(colours: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Flat-colour images [N, 3, size, size] in [0, 1], normalised as the eval transform does."""
    pixels = colours[:, :, None, None].expand(-1, -1, size, size)
    return (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def known_retrieval(n: int = 8, swapped: int = 3) -> RetrievalAccumulator:
    """Caption i describes image i; every caption scores its own image best except caption `swapped`,
    which scores image swapped+1 first and its own second."""
    image_features = torch.eye(n)
    text_features = torch.eye(n) + 0.3 * torch.roll(torch.eye(n), 1, dims=1)
    text_features[swapped] = 0.6 * torch.eye(n)[swapped] + torch.eye(n)[swapped + 1]
    colours = torch.rand(n, 3, generator=torch.Generator().manual_seed(0))
    tokens = torch.arange(1, n + 1)[:, None].repeat(1, 4)  # caption i: tokens [i+1] * 4
    accumulator = RetrievalAccumulator(ks=(1, 5), examples=n, shown=5, thumbnail_size=8)
    accumulator.add(image_features[:5], text_features[:5], normalised(colours[:5]), tokens[:5])
    accumulator.add(image_features[5:], text_features[5:], normalised(colours[5:]), tokens[5:])
    accumulator.colours = colours
    return accumulator


def test_retrieval_sheet_marks_the_right_image_where_it_was_ranked(tmp_path):
    accumulator = known_retrieval()
    metrics = accumulator.compute(decode=lambda ids: f"<start_of_text>caption {ids[0] - 1}<end_of_text>")
    assert metrics["text_to_image_R@1"] == pytest.approx(7 / 8)
    examples = accumulator.examples
    assert examples.gallery == 8 and sorted(examples.correct) == list(range(8))  # every caption, once
    assert examples.captions == [f"caption {right}" for right in examples.correct]
    cells = examples.cells()
    assert len(cells) == 8 and all(len(row) == 5 for row in cells)
    for row, right in zip(cells, examples.correct):
        assert [index for index, marked in row if marked] == [right], "exactly the caption's own image"
    swapped = examples.correct.index(3)
    assert cells[swapped][:2] == [(4, False), (3, True)]
    assert [r for q, r in enumerate(examples.rank_of_correct()) if q != swapped] == [1] * 7
    assert examples.rank_of_correct()[swapped] == 2
    # the thumbnails are the images themselves, back in pixels (flat colours survive the round trip)
    for index, thumb in examples.thumbnails.items():
        assert thumb.shape == (8, 8, 3) and thumb.dtype == np.uint8
        expected = (accumulator.colours[index] * 255).numpy()
        assert np.abs(thumb.reshape(-1, 3).astype(float) - expected).max() <= 1.5
    fig = retrieval_sheet_figure(examples, "known")
    images = [ax for ax in fig.axes if ax.images]
    framed = [ax for ax in images if ax.spines["top"].get_linewidth() == 4]
    assert len(images) == 8 * 5 and len(framed) == 8  # one framed image per caption
    path = tmp_path / "sheet.png"
    fig.savefig(path)
    assert_png(path)


def test_retrieval_sheet_says_when_the_right_image_is_not_shown():
    thumbs = {i: np.full((4, 4, 3), 10 * i, np.uint8) for i in (2, 4, 7)}
    examples = RetrievalExamples(["a cat"], ranked=[[4, 2]], correct=[7], thumbnails=thumbs, gallery=9)
    assert examples.cells() == [[(4, False), (2, False)]] and examples.rank_of_correct() == [None]
    shown = [ax for ax in retrieval_sheet_figure(examples, "missed").axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["#1", "#2", "its image (missed)"]
    assert shown[-1].images[0].get_array()[0, 0, 0] == 70  # image 7 itself


def test_accumulator_keeps_nothing_extra_without_examples():
    accumulator = RetrievalAccumulator(ks=(1,))
    accumulator.add(
        torch.eye(3), torch.eye(3), normalised(torch.rand(3, 3)), torch.ones(3, 2, dtype=torch.long)
    )
    accumulator.compute()
    assert accumulator.thumbs == [] and accumulator.examples is None


def test_per_class_plot_has_one_bar_per_class_sorted(tmp_path):
    data = PerClassAccuracy(
        ["cat", "dog", "owl", "emu", "yak"], [0.5, 1.0, 0.0, math.nan, 0.25], [2, 1, 3, 0, 4]
    )
    assert data.top1 == pytest.approx((1 + 1 + 0 + 1) / 10)
    fig = per_class_figure(data, "known")
    bars = fig.axes[0].patches
    assert len(bars) == 4  # the class without images has no bar
    assert [b.get_height() for b in bars] == [1.0, 0.5, 0.25, 0.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dog", "cat", "yak", "owl"]
    many = PerClassAccuracy([f"c{i}" for i in range(300)], list(np.linspace(0, 1, 300)), [1] * 300)
    assert len(per_class_figure(many, "many").axes[0].patches) == 300
    path = tmp_path / "per_class.png"
    fig.savefig(path)
    assert_png(path)


def test_shots_matching_reads_the_crossing_in_log_shots():
    curve = KShotCurve([1, 2, 4, 8, 16], [0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5, ["a", "b"])
    assert shots_matching(curve, 0.35) == pytest.approx(2**2.5)
    assert shots_matching(curve, 0.2) == pytest.approx(2.0)
    assert shots_matching(curve, 0.05) == 1.0  # one shot already matches
    assert shots_matching(curve, 0.9) is None  # zero-shot beats every probe
    metrics = {
        "1shot_top1_mean": 0.1,
        "1shot_top1_std": 0.01,
        "16shot_top1_mean": 0.5,
        "16shot_top1_std": 0.0,
    }
    parsed = KShotCurve.from_metrics(metrics, ["a"])
    assert parsed.shots == [1, 16] and parsed.mean == [0.1, 0.5] and parsed.std == [0.01, 0.0]


def test_kshot_curve_beside_the_zero_shot_line():
    curve = KShotCurve([1, 2, 4], [0.2, 0.4, 0.6], [0.05, 0.05, 0.02], ["a", "b", "c"])
    ax = kshot_figure(curve, 0.5, "known").axes[0]
    horizontal = [line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1]
    assert 0.5 in horizontal and pytest.approx(1 / 3) in horizontal  # zero-shot and chance
    assert "2.8-shot" in ax.get_title()  # 2 ** 1.5


def outputs_of_one_eval():
    classes = ["c0", "c1", "c2"]
    return {
        "folder": {"per_class": PerClassAccuracy(classes, [1.0, 0.5, 0.0], [2, 2, 2])},
        "kshot": {"kshot": KShotCurve([1, 2, 4], [0.2, 0.4, 0.8], [0.0] * 3, classes)},
        "other": {"per_class": PerClassAccuracy(["x", "y"], [1.0, 1.0], [1, 1])},
        "retrieval": {
            "retrieval": RetrievalExamples(["a b"], [[1, 0]], [0], {0: np.zeros((4, 4, 3), np.uint8)}, 2)
        },
    }


def test_pictures_are_written_beside_results_and_linked(tmp_path):
    pictures = write_pictures(outputs_of_one_eval(), tmp_path)
    names = [p.file.name for p in pictures]
    assert names == ["per_class_folder.png", "kshot_vs_zeroshot_kshot.png", "per_class_other.png",
                     "retrieval_sheet_retrieval.png"]  # fmt: skip
    for picture in pictures:
        assert_png(picture.file)
    kshot = pictures[1]
    assert "matches a 2.4-shot probe" in kshot.caption  # zero-shot 0.5 (the same classes): 2 ** 1.25
    assert [row[3] for row in kshot.rows] == [0.5, 0.5, 0.5]
    write_results([{"metric": "zeroshot/folder/top1", "value": 0.5, "chance": 1 / 3}], tmp_path, {}, pictures)
    text = (tmp_path / "results.md").read_text()
    for name in names:
        assert f"]({name})" in text
    assert pictures_markdown([], tmp_path) == ""


def test_kshot_prefers_its_own_zero_shot_on_the_same_test_images(tmp_path):
    outputs = outputs_of_one_eval()
    outputs["kshot"]["kshot"].zero_shot = 0.8  # the folder entry says 0.5
    (picture,) = [p for p in write_pictures(outputs, tmp_path) if "kshot" in p.file.name]
    assert "zero-shot (0.800)" in picture.caption and [row[3] for row in picture.rows] == [0.8] * 3


def test_kshot_without_a_zero_shot_partner_has_no_line(tmp_path):
    outputs = {"kshot": {"kshot": KShotCurve([1, 2], [0.2, 0.4], [0.0, 0.0], ["a", "b"])},
               "ema/zs": {"per_class": PerClassAccuracy(["a", "b"], [1.0, 1.0], [1, 1])}}  # fmt: skip
    (picture,) = [p for p in write_pictures(outputs, tmp_path) if "kshot" in p.file.name]
    assert "no zero-shot entry" in picture.caption  # the EMA weights' zero-shot is another model's


def test_a_broken_picture_costs_only_itself(tmp_path, caplog):
    outputs = {"bad": {"per_class": PerClassAccuracy(["a"], [0.5], [])}, **outputs_of_one_eval()}
    outputs["bad"]["per_class"].classnames = []  # 1 / 0 classes while drawing
    pictures = write_pictures(outputs, tmp_path)
    assert len(pictures) == 4 and "bad: no pictures" in caplog.text


class RecordingLogger:
    """Records what a WandbLogger would be asked (its log_image / log_table signatures)."""

    def __init__(self):
        self.images, self.tables = [], []

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, images, kwargs))

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables.append((key, columns, data))


def test_pictures_go_to_wandb_as_images_and_tables(tmp_path):
    pictures = write_pictures(outputs_of_one_eval(), tmp_path)
    logger = RecordingLogger()
    assert log_pictures(pictures, [logger, object()]) == 1  # a logger without images is left alone
    assert [k for k, _, _ in logger.images] == [f"pictures/{p.file.stem}" for p in pictures]
    assert all(images == [str(p.file)] for (_, images, _), p in zip(logger.images, pictures))
    key, columns, data = logger.tables[0]
    assert key == "pictures/per_class_folder_table" and columns == ["class", "top1", "images"]
    assert data[1] == ["c1", 0.5, 2]


def test_wandb_logger_accepts_them_offline(tmp_path, monkeypatch):
    """The real WandbLogger, offline: the images and tables land in its run files."""
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    pictures = write_pictures(outputs_of_one_eval(), tmp_path / "run")
    logger = WandbLogger(project="cliplab-test", save_dir=str(tmp_path), offline=True)
    try:
        assert log_pictures(pictures, [logger]) == 1
        run_dir = logger.experiment.dir
    finally:
        wandb.finish()
    media = [p.relative_to(run_dir).as_posix() for p in Path(run_dir).rglob("*") if p.is_file()]
    assert any(m.startswith("media/images/pictures/per_class_folder_") and m.endswith(".png") for m in media)
    assert any(m.startswith("media/table/pictures/per_class_folder_table_") for m in media), media


def test_sheet_captions_do_not_depend_on_gallery_order():
    """Picked by caption content: a permuted gallery (another rank count) shows the same captions."""
    n = 12
    texts, images = torch.randn(n, 6, generator=torch.Generator().manual_seed(1)), torch.eye(n, 6)
    tokens = torch.arange(1, n + 1)[:, None].repeat(1, 3)
    picked = []
    for order in (torch.arange(n), torch.randperm(n, generator=torch.Generator().manual_seed(2))):
        accumulator = RetrievalAccumulator(ks=(1,), examples=4, thumbnail_size=4)
        accumulator.add(images[order], texts[order], normalised(torch.rand(n, 3)), tokens[order])
        accumulator.compute(decode=lambda ids: f"caption {ids[0] - 1}")
        picked.append(accumulator.examples.captions)
    assert picked[0] == picked[1] and len(set(picked[0])) == 4
