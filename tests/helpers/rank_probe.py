"""A callback that test runs add with `+callbacks.probe._target_=rank_probe.RankProbe` (tests/helpers on
PYTHONPATH): each rank writes what it did to `<output_dir>/probe_rank<r>.json`, and the run can be
killed or sent SIGTERM at a chosen step (the whole process group, as a lost node or a scheduler's
preemption would), or SIGTERM sent to rank 1 alone (one node of a job preempted). Each step also records
one draw of the global torch, numpy and Python RNGs (drawn before the step's checkpoint, which Lightning
runs after the other callbacks)."""

import hashlib
import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class RankProbe(pl.Callback):
    def __init__(
        self,
        out: str,
        kill_at_step: int = -1,
        sigterm_at_step: int = -1,
        nan_at_step: int = -1,
        sigterm_rank1_at_step: int = -1,
    ):
        self.out = Path(out)
        self.kill_at_step, self.sigterm_at_step = kill_at_step, sigterm_at_step
        self.sigterm_rank1_at_step = sigterm_rank1_at_step
        self.steps: list[dict] = []
        self.batches_per_epoch: dict[int, int] = {}
        self.val_batches: dict[int, int] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        self.steps.append({"step": step, "tokens": _digest(batch[1]), "images": _digest(batch[0]),
                           "loss": float(outputs["loss"]), "rng": draws})  # fmt: skip
        epoch = trainer.current_epoch
        self.batches_per_epoch[epoch] = self.batches_per_epoch.get(epoch, 0) + 1
        self._dump(trainer, module, finished=False)
        if step == self.kill_at_step:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        if step == self.sigterm_at_step and trainer.global_rank == 0:
            os.killpg(os.getpgid(0), signal.SIGTERM)
        if step == self.sigterm_rank1_at_step and trainer.global_rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            epoch = trainer.current_epoch
            self.val_batches[epoch] = self.val_batches.get(epoch, 0) + 1

    def on_train_end(self, trainer, module):
        self._dump(trainer, module, finished=True)

    def _dump(self, trainer, module, finished: bool) -> None:
        params = {name: p.detach().double().sum().item() for name, p in module.named_parameters()}
        record = {
            "rank": trainer.global_rank,
            "global_step": trainer.global_step,
            "finished": finished,
            "steps": self.steps,
            "batches_per_epoch": self.batches_per_epoch,
            "val_batches": self.val_batches,
            "params": params,
            "samples_seen": getattr(module, "samples_seen", None),
            "flops_seen": next((c.flops_seen for c in trainer.callbacks if hasattr(c, "flops_seen")), None),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"probe_rank{trainer.global_rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
