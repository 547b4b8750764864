"""The loss-curve picture: the recorder keeps exactly what the loggers got, survives a resume, and is drawn
beside results.md."""

import csv

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger

from cliplab.callbacks.loss_curves import LossCurveRecorder
from cliplab.eval.pictures.loss_curves import loss_curves_figure
from cliplab.eval.pictures.write import write_pictures
from cliplab.lit.module import CLIPModule
from tests._tiny import LOSS, MODEL, quiet_trainer, tiny_loader
from tests.test_pictures import assert_png

BATCH = 4  # tiny_loader's batches


def _fit(tmp_path, epochs: int, ckpt_path=None) -> tuple[LossCurveRecorder, list[dict]]:
    torch.manual_seed(0)
    module = CLIPModule(model=MODEL, loss=LOSS, optim={"_target_": "torch.optim.AdamW", "lr": 1e-3})
    recorder = LossCurveRecorder()
    trainer = quiet_trainer(
        max_epochs=epochs,
        log_every_n_steps=2,
        num_sanity_val_steps=1,
        callbacks=[recorder],
        logger=CSVLogger(tmp_path, name="csv", version=""),
        enable_checkpointing=False,
    )
    trainer.fit(module, train_dataloaders=tiny_loader(), val_dataloaders=tiny_loader(), ckpt_path=ckpt_path)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        return recorder, list(csv.DictReader(f))


def test_recorded_points_are_the_logged_losses(tmp_path):
    recorder, rows = _fit(tmp_path, epochs=2)  # 6 steps of 4 samples, logged every 2nd: steps 2, 4, 6
    logged_train = [(int(r["step"]) + 1, float(r["train/loss"])) for r in rows if r.get("train/loss")]
    logged_val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert [n for n, _ in recorder.curves.train] == [BATCH * step for step, _ in logged_train] == [8, 16, 24]
    assert [v for _, v in recorder.curves.train] == pytest.approx([v for _, v in logged_train], rel=1e-6)
    # one point per epoch's validation, the sanity check left out
    assert [n for n, _ in recorder.curves.val] == [12, 24]
    assert [v for _, v in recorder.curves.val] == pytest.approx(logged_val, rel=1e-6)


def test_a_resumed_run_draws_the_whole_curve(tmp_path):
    straight, _ = _fit(tmp_path / "straight", epochs=2)
    _fit(tmp_path / "first", epochs=1)
    resumed, _ = _fit(tmp_path / "second", epochs=2, ckpt_path=tmp_path / "first" / "last.ckpt")
    for split in ("train", "val"):
        got, want = getattr(resumed.curves, split), getattr(straight.curves, split)
        assert [n for n, _ in got] == [n for n, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)


def test_the_picture_is_written_with_its_numbers(tmp_path):
    recorder, _ = _fit(tmp_path, epochs=2)
    (picture,) = write_pictures(recorder.picture_data(), tmp_path / "out")
    assert picture.file.name == "loss_curves.png"
    assert_png(picture.file)
    assert picture.rows == [[8, "train", recorder.curves.train[0][1]], *picture.rows[1:]]
    assert sum(row[1] == "val" for row in picture.rows) == 2
    lines = loss_curves_figure(recorder.curves, "t").axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [3, 2]  # training and validation
    assert LossCurveRecorder().picture_data() == {}  # nothing recorded: no picture
