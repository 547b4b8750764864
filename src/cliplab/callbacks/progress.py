"""A progress bar that reads device values on logging steps only."""

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from cliplab.lit.log_steps import is_logging_step


class ClipProgressBar(RichProgressBar):
    """Lightning's RichProgressBar showing `metrics` (the training loss) as of the last logging step.

    Lightning turns every metric logged with `prog_bar=True` into a Python number (`.item()`: the host waits
    for the GPU) after every batch, however often the bar redraws. So CLIPModule logs its loss without
    `prog_bar`, and this bar reads `metrics` from the callback metrics on the batches Lightning logs (every
    `trainer.log_every_n_steps`) and at epoch and validation ends, keeping the last values in between. The bar
    itself moves every batch; with another progress bar, the loss is in the loggers only.
    """

    def __init__(self, metrics: Sequence[str] = ("train/loss",), **kwargs: Any):
        super().__init__(**kwargs)
        self.metrics = tuple(metrics)
        self._shown: dict[str, float] = {}
        self._read_values = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._read_values = is_logging_step(trainer)
        try:
            super().on_train_batch_end(trainer, *args, **kwargs)
        finally:
            self._read_values = True

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self._read_values:
            for name in self.metrics:
                value = trainer.callback_metrics.get(name)
                if value is not None:
                    self._shown[name] = float(value)
        return {**super().get_metrics(trainer, pl_module), **self._shown}
