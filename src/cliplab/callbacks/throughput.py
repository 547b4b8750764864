"""Throughput, training FLOPs and MFU logging (Lightning's ThroughputMonitor with CLIP batches)."""

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ThroughputMonitor


def clip_batch_size(batch: Any) -> int:
    return batch[0].shape[0]


class ClipThroughputMonitor(ThroughputMonitor):
    """Logs `train|validate/{samples,batches}_per_sec`, `.../flops_per_sec`, `.../mfu` and `train/flops_seen`.

    FLOPs come from the module's `flops_per_batch`. Lightning knows the peak FLOP/s of common GPUs;
    for CPUs (or to override) give `peak_flops` (FLOP/s per device, e.g. from `make bench`'s matmul
    peak) so MFU is reported there too.
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 20, **kwargs: Any):
        super().__init__(batch_size_fn=clip_batch_size, window_size=window_size, **kwargs)
        self.peak_flops = peak_flops

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops  # per device, as Throughput expects

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # Cumulative training compute (the x axis of scaling plots, in W&B too): the FLOPs every batch did
        # (its text trimmed to its longest caption), kept in checkpoints. Other ranks' batches are counted as
        # this rank's (each trims its own; no collective on the step's path for a logged figure).
        per_batch = getattr(pl_module, "flops_per_batch", None)
        if per_batch and hasattr(pl_module, "flops_seen"):
            pl_module.flops_seen += float(per_batch) * trainer.world_size
            pl_module.log("train/flops_seen", pl_module.flops_seen, rank_zero_only=True)
