"""Logs the data the pipeline skipped (corrupt images, empty captions, truncated shards) each epoch."""

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class DataFaultLogger(pl.Callback):
    """`data/<kind>` counts for this rank, summed over ranks; a warning line when anything was skipped."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "fault_summary"):
            return
        summary = datamodule.fault_summary()
        for kind, count in summary.items():
            pl_module.log(f"data/{kind}", float(count), sync_dist=True, reduce_fx="sum")
        skipped = summary.get("skipped_samples", 0) + summary.get("skipped_shards", 0)
        if skipped and trainer.is_global_zero:
            log.warning(
                "data faults so far (this rank): %s; details in %s", summary, datamodule.faults.directory
            )
