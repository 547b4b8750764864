"""Logs the data the pipeline skipped (corrupt images, empty captions, truncated shards) each epoch."""

import logging

import pytorch_lightning as pl
import torch

from cliplab.data.faults import SUMMARY_KEYS

log = logging.getLogger(__name__)


class DataFaultLogger(pl.Callback):
    """`data/<kind>`: the faults of every rank so far, each counted once; a warning line when any.

    Each rank's `fault_summary()` holds that rank's faults only (`FaultLog.for_rank`); the per-rank counts of
    every key of `SUMMARY_KEYS` (zero when none, so every rank takes part in the same collective) are summed
    in one all-reduce, and every rank logs the same totals.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "fault_summary"):
            return
        summary = datamodule.fault_summary()
        local = torch.tensor(
            [summary[key] for key in SUMMARY_KEYS], dtype=torch.int64, device=pl_module.device
        )
        # float64 on the host: exact counts past float32's 2**24
        totals = dict(zip(SUMMARY_KEYS, trainer.strategy.reduce(local, reduce_op="sum").cpu().double()))
        for key, total in totals.items():
            pl_module.log(f"data/{key}", total)
        if (totals["skipped_samples"] or totals["skipped_shards"]) and trainer.is_global_zero:
            counts = {key: int(total) for key, total in totals.items() if total}
            log.warning("data faults so far (all ranks): %s; details in %s", counts, datamodule.faults.root)
