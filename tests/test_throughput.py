"""The throughput callback logs cumulative training compute: FLOPs per sample x samples seen."""

import pytorch_lightning as pl
import torch

from cliplab.callbacks.throughput import ClipThroughputMonitor
from tests.test_module_training_step import _Batches, _module


def test_flops_seen_is_flops_per_sample_times_samples_seen():
    module = _module()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ClipThroughputMonitor(peak_flops=1e9, window_size=2)],
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_Batches(), batch_size=None))
    assert module.samples_seen == 12 and module.flops_per_sample > 0
    logged = float(trainer.callback_metrics["train/flops_seen"])
    assert logged == module.flops_per_sample * 12
