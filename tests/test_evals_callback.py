"""EvalsCallback runs each entry on its own schedule and logs `<prefix>/<metric>`; end-of-training
entries reach callback_metrics, the loggers and the results table."""

import pytorch_lightning as pl

from cliplab.callbacks.evals import EvalsCallback
from cliplab.eval.benchmarks import ImageFolderBenchmark
from cliplab.eval.evaluator import EvalEntry, Schedule
from cliplab.eval.evaluators.zeroshot import ZeroShotClassification
from cliplab.utils.results import final_results
from tests.test_eval_callbacks import TinyModule, _loader
from tests.test_eval_cli import make_folder


class Counting(ZeroShotClassification):
    """Zero-shot on the colour folder, recording the global step of every run."""

    def __init__(self, root, steps: list):
        super().__init__(ImageFolderBenchmark("colours", root, ["a photo of {}."]), batch_size=4)
        self.steps = steps

    def run(self, model, context):
        self.steps.append(self.trainer.global_step)
        return super().run(model, context)


def entries(root, **schedules):
    """name -> (Schedule, list of steps it ran at)."""
    made, seen = [], {}
    for name, schedule in schedules.items():
        seen[name] = []
        made.append(EvalEntry(name, f"zeroshot/{name}", schedule, Counting(root, seen[name])))
    return made, seen


def fit(callback, logger=False, **kw):
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = pl.Trainer(callbacks=[callback], num_sanity_val_steps=0, logger=logger, **quiet, **kw)
    for entry in callback.entries:
        entry.evaluator.trainer = trainer
    return trainer


def test_each_entry_keeps_its_own_schedule(tmp_path):
    made, seen = entries(
        make_folder(tmp_path),
        epochs=Schedule(every_n_epochs=1, at_end=True),
        steps=Schedule(every_n_steps=3, at_end=False),
        end=Schedule(at_end=True),
    )
    callback = EvalsCallback(made, image_size=16)
    trainer = fit(callback, max_epochs=2)
    trainer.fit(TinyModule(), train_dataloaders=_loader(16), val_dataloaders=_loader())
    assert seen["epochs"] == [4, 8]  # at each validation end; not again at the end (same step)
    assert seen["steps"] == [3, 6]
    assert seen["end"] == [8]
    metrics = trainer.callback_metrics
    assert float(metrics["zeroshot/end/top1"]) == 1.0 and float(metrics["zeroshot/epochs/top1"]) == 1.0
    rows = {row["metric"]: row for row in final_results(trainer, {k: float(v) for k, v in metrics.items()})}
    assert rows["zeroshot/end/top1"]["chance"] == 1 / 3 and rows["zeroshot/steps/top5"]["chance"] == 1.0
    record = callback.provenance()["end"]
    assert record["step"] == 8 and record["n_images"] == 9 and record["templates"] == ["a photo of {}."]


def test_end_only_entries_reach_the_loggers(tmp_path):
    made, seen = entries(make_folder(tmp_path / "images"), end=Schedule(at_end=True))
    logger = pl.loggers.CSVLogger(tmp_path, name="csv", version="")
    trainer = fit(EvalsCallback(made, image_size=16), logger=logger, max_epochs=1, limit_val_batches=0)
    trainer.fit(TinyModule(), train_dataloaders=_loader(8))
    assert seen["end"] == [2]
    assert "zeroshot/end/top1" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]


def test_a_moving_average_is_evaluated_beside_the_live_weights(tmp_path):
    import pytest
    import torch

    from cliplab.lit.ema import EmaWeights

    module = TinyModule()
    module.ema = EmaWeights(module.model, decay=0.5)
    with torch.no_grad():  # an average that confuses the first two colours
        module.ema.weights.get_parameter("w").copy_(torch.eye(3)[[1, 0, 2]])
    made, seen = entries(make_folder(tmp_path), live=Schedule(every_n_epochs=1))
    callback = EvalsCallback(made, image_size=16)
    trainer = fit(callback, max_epochs=1)
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    metrics = trainer.callback_metrics
    assert float(metrics["zeroshot/live/top1"]) == 1.0
    assert float(metrics["ema/zeroshot/live/top1"]) == pytest.approx(1 / 3)
    rows = {row["metric"]: row for row in final_results(trainer, {k: float(v) for k, v in metrics.items()})}
    assert rows["ema/zeroshot/live/top1"]["chance"] == pytest.approx(1 / 3)
    torch.testing.assert_close(module.model.w.detach(), torch.eye(3), rtol=0, atol=0)  # live weights back
    assert seen["live"] == [2, 2]  # live, then averaged
