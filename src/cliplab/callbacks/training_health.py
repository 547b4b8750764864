"""Training health: an optimizer step with a non-finite gradient is skipped, counted and logged; a run of them
stops training with one line. Logs the gradient norm.

The decision reads the total gradient norm after the backward, once the strategy has reduced the gradients
(DDP all-reduces them, the norm of FSDP2's shards is all-reduced here), so every rank takes the same decision.
A non-finite loss on any rank makes the reduced gradients non-finite on every rank.

The check stays on the device: for torch's fused optimizers (the default AdamW is fused, see
`cliplab.lit.module`) the skip is the `found_inf` flag their kernel reads, as AMP's GradScaler uses it:
parameters and optimizer state (Adam's moments and step count) are left exactly as they were. Other
optimizers (non-fused, e.g. FSDP2's DTensor parameters) get a host-side decision, one device sync per step:
their gradients are dropped (`grad = None`), and torch optimizers leave a parameter without gradient untouched.
A skipped step is still a trainer step: `global_step`, `samples_seen` and the learning-rate schedule advance.
The run of consecutive skips is read on the host on logging steps only, so the run stops at the first logging
step after `max_consecutive_skips` skips in a row (with `trainer.log_every_n_steps` steps of delay at most).
Every rank stops; the stop line is printed by rank 0 alone (`TrainingDivergedError.same_on_every_rank`).
Under DeepSpeed the engine owns the gradients and the step: this callback then does nothing (DeepSpeed's fp16
loss scaler skips overflowing steps itself). With fp16 AMP, Lightning's GradScaler keeps its own skip.
"""

import logging

import pytorch_lightning as pl
import torch

from cliplab.lit.log_steps import is_logging_step
from cliplab.utils.errors import CliplabError, ConfigError

log = logging.getLogger(__name__)


class TrainingDivergedError(CliplabError):
    """Too many optimizer steps in a row had non-finite gradients."""

    same_on_every_rank = True  # every rank counts the same reduced gradients and stops at the same step


class TrainingHealth(pl.Callback):
    """Skips optimizer steps whose gradient norm is not finite; `max_consecutive_skips` in a row stop the run.

    Logs `train/grad_norm` (total L2 norm before clipping) and `train/skipped_steps` (so far, this run and the
    runs it resumed) on logging steps.
    """

    def __init__(self, max_consecutive_skips: int = 10):
        if int(max_consecutive_skips) < 1:
            raise ConfigError(
                f"callbacks.training_health.max_consecutive_skips must be at least 1, got {max_consecutive_skips}"
            )
        self.max_consecutive_skips = int(max_consecutive_skips)
        # [skipped steps, current run of skips, longest run seen], float32 on the gradients' device (exact
        # counts up to 2**24); created at the first step, from `_restored` (a checkpoint's counts).
        self._counts: torch.Tensor | None = None
        self._restored = torch.zeros(3)
        self._flagged: torch.optim.Optimizer | None = None  # the optimizer carrying our `found_inf`
        self._active = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = "DeepSpeed" not in type(trainer.strategy).__name__
        if not self._active:
            log.info(
                "training_health: DeepSpeed owns the optimizer step; non-finite steps are not skipped here"
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._active:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
        if hasattr(norm, "full_tensor"):  # FSDP2: the norm of the local shards, summed over ranks
            norm = norm.full_tensor()
        bad = (~torch.isfinite(norm)).float()
        counts = self._counts_on(norm.device)
        counts[0].add_(bad)
        counts[1].add_(1).mul_(bad)
        counts[2] = torch.maximum(counts[2], counts[1])
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = bad  # the fused kernel leaves parameters and state alone when it is 1
            self._flagged = optimizer
        elif bad.item():  # host-side decision: no gradient, no update
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
        if is_logging_step(trainer):
            pl_module.log("train/grad_norm", norm.detach().float())
            pl_module.log("train/skipped_steps", counts[0].clone())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if self._flagged is not None:
            if hasattr(self._flagged, "found_inf"):  # AMP's GradScaler may have replaced and removed it
                del self._flagged.found_inf
            self._flagged = None
        if self._counts is None or not is_logging_step(trainer):
            return
        longest = int(self._counts[2])  # the host reads device values on logging steps only
        if longest >= self.max_consecutive_skips:
            raise TrainingDivergedError(
                f"training stopped at step {trainer.global_step}: {longest} optimizer steps in a row had a "
                "non-finite loss or gradient and were skipped "
                f"(callbacks.training_health.max_consecutive_skips={self.max_consecutive_skips}); the weights "
                "are those of the last finite step: lower optim.lr, set trainer.gradient_clip_val, or check the data"
            )

    def _counts_on(self, device: torch.device) -> torch.Tensor:
        if self._counts is None or self._counts.device != device:
            source = self._restored if self._counts is None else self._counts
            self._counts = source.to(device, dtype=torch.float32)
        return self._counts

    def state_dict(self) -> dict:
        counts = self._restored if self._counts is None else self._counts.detach().cpu()
        return {"skipped_steps": counts[0].clone(), "consecutive_skips": counts[1].clone()}

    def load_state_dict(self, state_dict: dict) -> None:
        skipped, run = (
            torch.as_tensor(state_dict[k]).float() for k in ("skipped_steps", "consecutive_skips")
        )
        # the run of skips goes on across the resume; the longest run restarts from it (a stopped run resumed
        # with a fix must not stop again at its first logging step)
        self._restored, self._counts = torch.stack([skipped, run, torch.zeros(())]), None
