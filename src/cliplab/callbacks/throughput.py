"""Throughput, training FLOPs and MFU logging (Lightning's ThroughputMonitor with CLIP batches)."""

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import Throughput
from pytorch_lightning.callbacks import ThroughputMonitor
from pytorch_lightning.trainer.states import RunningStage, TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cliplab.lit.log_steps import is_logging_step


def clip_batch_size(batch: Any) -> int:
    return batch[0].shape[0]


class ClipThroughputMonitor(ThroughputMonitor):
    """Logs `train|validate/{samples,batches}_per_sec`, `.../flops_per_sec`, `.../mfu` and `train/flops_seen`.

    FLOPs come from the module's `flops_per_batch`. Lightning knows the peak FLOP/s of common GPUs;
    for CPUs (or to override) give `peak_flops` (FLOP/s per device, e.g. from `make bench`'s matmul
    peak) so MFU is reported there too.

    Training throughput is measured on logging steps only (`trainer.log_every_n_steps`): timing a step means
    waiting for the GPU (Lightning's monitor calls `torch.cuda.synchronize()` after every batch), so the batches
    in between are only counted on the host, and each measurement covers every batch (samples, FLOPs) since the
    previous one. `window_size` counts batches, as in Lightning (rates over the last `window_size - 1` of them):
    rates average over at least that many, rounded up to whole logging intervals, so they first appear on the
    second logging step at the earliest. Validation is measured once, over the whole of it, when it ends (its
    batches are counted on the host; FLOPs are forward-only there, from the module's `flops_per_batch`).
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 20, **kwargs: Any):
        super().__init__(batch_size_fn=clip_batch_size, window_size=window_size, **kwargs)
        self.peak_flops = peak_flops
        self._reset_pending()
        self.flops_seen = 0.0  # training FLOPs done so far, all ranks; in checkpoints (`state_dict`)
        # A CPU scalar refilled each batch: a Python number would become a new device tensor every batch in
        # `self.log` (a host-to-device copy that waits for the GPU); loggers read a CPU tensor without waiting.
        self._flops_seen_value = torch.zeros(())

    def state_dict(self) -> dict:
        return {"flops_seen": self.flops_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.flops_seen = float(state_dict.get("flops_seen", 0.0))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == TrainerFn.FITTING:
            # Throughput's window counts updates, one per logging interval here: keep its span in batches.
            every = max(1, trainer.log_every_n_steps)
            intervals = max(1, math.ceil((self.kwargs["window_size"] - 1) / every))
            self._throughputs[RunningStage.TRAINING] = Throughput(
                available_flops=self.available_flops,
                world_size=trainer.world_size,
                **{**self.kwargs, "window_size": intervals + 1},
            )
        if RunningStage.VALIDATING in self._throughputs:
            # Two points, at its start and at its end: rates over the whole validation.
            self._throughputs[RunningStage.VALIDATING] = Throughput(
                available_flops=self.available_flops,
                world_size=trainer.world_size,
                **{**self.kwargs, "window_size": 2},
            )
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops  # per device, as Throughput expects

    def _reset_pending(self) -> None:
        # Batches done since the last Throughput update (this rank); flops None if one had no count.
        self._pending_batches = self._pending_samples = self._pending_lengths = 0
        self._pending_flops: float | None = 0.0

    def _count_pending(self, batch: Any, per_batch: float | None) -> None:
        self._pending_batches += 1
        self._pending_samples += self.batch_size_fn(batch)
        if self.length_fn is not None:
            self._pending_lengths += self.length_fn(batch)
        if per_batch is None or self._pending_flops is None:
            self._pending_flops = None
        else:
            self._pending_flops += per_batch

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._reset_pending()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Replaces Lightning's hook, which synchronises with the GPU after every batch. Every batch: host only.
        per_batch = getattr(pl_module, "flops_per_batch", None)
        # Cumulative training compute (the x axis of scaling plots, in W&B too): the FLOPs every batch did
        # (its text trimmed to its longest caption), kept in checkpoints. Other ranks' batches are counted as
        # this rank's (each trims its own; no collective on the step's path for a logged figure).
        if per_batch:
            self.flops_seen += float(per_batch) * trainer.world_size
            value = self._flops_seen_value.fill_(self.flops_seen)
            pl_module.log("train/flops_seen", value, rank_zero_only=True)
        if not trainer.is_global_zero:  # Lightning's monitor measures on rank 0 only
            return
        self._count_pending(batch, per_batch)
        if is_logging_step(trainer):
            self._update_pending(trainer, RunningStage.TRAINING)
            self._compute(trainer)

    def _update_pending(self, trainer: pl.Trainer, stage: RunningStage) -> None:
        """One Throughput update for the batches since the last one (Lightning's `_update`, batched)."""
        if not self._pending_batches:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the queued work done (as Lightning does every batch)
        elapsed = time.perf_counter() - self._t0s[stage]
        self._batches[stage] += self._pending_batches
        self._samples[stage] += self._pending_samples
        self._lengths[stage] += self._pending_lengths
        self._throughputs[stage].update(
            time=elapsed,
            batches=self._batches[stage],
            samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage],
            flops=self._pending_flops,  # per device, done since the last update: what Throughput expects
        )
        self._reset_pending()

    @rank_zero_only
    def on_validation_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:
            return
        # Lightning's on_validation_end takes the time since the last training update out of training time:
        # the batches since then must be measured first, or their time would be dropped and their work kept.
        if trainer.state.fn == TrainerFn.FITTING:
            self._update_pending(trainer, RunningStage.TRAINING)
        super().on_validation_start(trainer, *args)
        self._reset_pending()
        self._throughputs[RunningStage.VALIDATING].update(
            time=0.0, batches=0, samples=0, lengths=None if self.length_fn is None else 0, flops=0.0
        )

    @rank_zero_only
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, *args, **kwargs
    ) -> None:
        # Replaces Lightning's hook, which synchronises with the GPU after every batch: host only.
        if not trainer.sanity_checking:
            self._count_pending(batch, getattr(pl_module, "flops_per_batch", None))

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:
            return
        stage = RunningStage.VALIDATING
        self._update_pending(trainer, stage)
        if self._batches.get(stage):
            metrics = self._throughputs[stage].compute()
            prefix = f"{stage.value}{self._throughputs[stage].separator}"
            trainer._logger_connector.log_metrics({prefix + k: v for k, v in metrics.items()})
        super().on_validation_end(trainer, *args)  # hands validation's time back to the training clock
