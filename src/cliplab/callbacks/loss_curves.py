"""Records the training and validation loss for the loss-curve picture beside results.md."""

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from cliplab.eval.pictures.data import LossCurves
from cliplab.lit.log_steps import is_logging_step


class LossCurveRecorder(pl.Callback):
    """Keeps (samples seen, loss): `train_metric` on the batches Lightning logs (the only ones on which the
    default callbacks read device values), `val_metric` after each validation. The history is in
    checkpoints, so a resumed run draws its whole curve."""

    def __init__(self, train_metric: str = "train/loss", val_metric: str = "val/loss"):
        super().__init__()
        self.train_metric, self.val_metric = train_metric, val_metric
        self.curves = LossCurves()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if is_logging_step(trainer):
            self._record(trainer, pl_module, self.train_metric, self.curves.train)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._record(trainer, pl_module, self.val_metric, self.curves.val)

    @staticmethod
    def _record(trainer: pl.Trainer, pl_module: pl.LightningModule, metric: str, into: list) -> None:
        value = trainer.callback_metrics.get(metric)
        if value is not None:
            into.append((int(getattr(pl_module, "samples_seen", trainer.global_step)), float(value)))

    def picture_data(self) -> dict[str, dict]:
        has_points = self.curves.train or self.curves.val
        return {"training": {"loss_curves": self.curves}} if has_points else {}

    def state_dict(self) -> dict:
        return {"train": [list(p) for p in self.curves.train], "val": [list(p) for p in self.curves.val]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.curves = LossCurves(
            train=[(int(n), float(v)) for n, v in state_dict.get("train", [])],
            val=[(int(n), float(v)) for n, v in state_dict.get("val", [])],
        )
