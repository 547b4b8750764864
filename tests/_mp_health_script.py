"""Training health and data-fault counts across ranks: a tiny CLIP on in-memory data, NaN injected into one
rank's batch, faults recorded in different numbers by each rank.

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_health_script.py <out_dir> [ddp|fsdp]` (2 CPU
processes, gloo; DDP by default): each rank writes `<out_dir>/rank<r>.json` with the results of `skip_one` and `stop_after_k`. The test
also calls both functions in its own process (one device). The stop line goes to stderr as `src/train.py` prints it.
"""

import json
import math
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import strategy as mp_strategy
from _tiny import CONTEXT, IMAGE_SIZE, LOSS, MODEL, VOCAB, quiet_trainer
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint

from cliplab.callbacks.data_faults import DataFaultLogger
from cliplab.callbacks.training_health import TrainingDivergedError, TrainingHealth
from cliplab.data.faults import FaultLog
from cliplab.lit.module import CLIPModule
from cliplab.utils.errors import print_user_error

BATCH = 4
STEPS = 4
NAN_STEP = 1  # skip_one: NaN in this step's images on one rank
K = 2  # stop_after_k: max_consecutive_skips; NaN from NAN_STEP on
# Faults each rank records (rank 1 more, of other kinds): a rank that logs keys the other does not would hang
FAULTS = {0: ["corrupt_image", "corrupt_image"], 1: ["missing_caption"] * 3 + ["truncated_shard"]}


class Data(pl.LightningDataModule):
    """`STEPS` batches per rank (different on each rank); `nan_steps` of `nan_rank` get a NaN pixel; in
    `setup` each rank records its `FAULTS` in its own FaultLog under the shared `fault_dir`."""

    def __init__(self, fault_dir: Path, nan_steps, nan_rank: int):
        super().__init__()
        self.nan_steps, self.nan_rank = set(nan_steps), nan_rank
        self.faults = FaultLog(fault_dir)

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank
        self.faults = self.faults.for_rank(rank)
        for kind in FAULTS[rank]:
            self.faults.record(kind, f"shard-{rank}.tar", None)

    def fault_summary(self) -> dict[str, int]:
        return self.faults.summary()

    def train_dataloader(self):
        rank, batches = self.trainer.global_rank, []
        for step in range(STEPS):
            gen = torch.Generator().manual_seed(100 * rank + step)
            images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
            if step in self.nan_steps and rank == self.nan_rank:
                images[0, 0, 0, 0] = math.nan
            batches.append((images, torch.randint(1, VOCAB - 1, (BATCH, CONTEXT), generator=gen)))
        return torch.utils.data.DataLoader(batches, batch_size=None)


class Snapshots(pl.Callback):
    """Whether each step changed the parameters, the optimizer state; the weights before the last step."""

    def __init__(self):
        self.params_changed, self.state_changed = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = _params(module)
        self.state_before = _optimizer_state(trainer.optimizers[0])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.params_changed.append(not _equal(_params(module), self.before))
        self.state_changed.append(not _equal(_optimizer_state(trainer.optimizers[0]), self.state_before))


def _params(module) -> dict:
    return {name: p.detach().clone() for name, p in module.model.named_parameters()}


def _optimizer_state(optimizer) -> dict:
    return {
        f"{i}.{key}": value.clone()
        for i, state in enumerate(optimizer.state.values())
        for key, value in state.items()
    }


def _equal(a: dict | None, b: dict) -> bool | None:
    if a is None:
        return None
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fit(
    out: Path,
    devices: int,
    data: Data,
    callbacks: list,
    optim: dict | None,
    strategy: str,
    loss: dict = LOSS,
    accumulation: dict | None = None,
) -> tuple:
    pl.seed_everything(0)
    optim = optim or {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    module = CLIPModule(model=MODEL, loss=loss, optim=optim, accumulation=accumulation)
    snapshots = Snapshots()
    trainer = quiet_trainer(
        devices=devices,
        strategy=mp_strategy(strategy) if devices > 1 else "auto",
        max_epochs=1,
        log_every_n_steps=1,
        enable_checkpointing=None,  # Lightning's default: stop_after_k passes its own ModelCheckpoint
        use_distributed_sampler=False,
        callbacks=[snapshots, *callbacks],
        default_root_dir=str(out),
    )
    error = None
    try:
        trainer.fit(module, datamodule=data)
    except TrainingDivergedError as e:
        print_user_error(e)  # as `src/train.py` reports it (then exits); the 2-rank test counts the lines
        error = str(e)
    return trainer, module, snapshots, error


def skip_one(
    out: Path,
    devices: int = 1,
    nan_rank: int = 0,
    optim: dict | None = None,
    strategy: str = "ddp",
    loss: dict = LOSS,
    accumulation: dict | None = None,
) -> dict:
    """NaN at step NAN_STEP on `nan_rank`: skipped on every rank, counted, training goes on; fault counts."""
    data = Data(out / "data_faults", [NAN_STEP], nan_rank)
    callbacks = [TrainingHealth(max_consecutive_skips=K), DataFaultLogger()]
    trainer, module, snapshots, error = _fit(
        out, devices, data, callbacks, optim, strategy, loss, accumulation
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "error": error,
        "global_step": trainer.global_step,
        "params_changed": snapshots.params_changed,
        "state_changed": snapshots.state_changed,
        "metrics": metrics,
        "finite": all(bool(torch.isfinite(p).all()) for p in module.parameters()),
        "checksum": sum(float(p.detach().double().sum()) for p in module.parameters()),  # same on all ranks
    }


def stop_after_k(out: Path, devices: int = 1, nan_rank: int = 0, strategy: str = "ddp") -> dict:
    """NaN at every step from NAN_STEP on `nan_rank`: K skips in a row stop the run; the weights, last.ckpt
    and the exception checkpoint are those after the last finite step."""
    data = Data(out / "data_faults", range(NAN_STEP, STEPS), nan_rank)
    ckpt_dir = out / "checkpoints"
    callbacks = [
        TrainingHealth(max_consecutive_skips=K),
        ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=0),
        OnExceptionCheckpoint(dirpath=ckpt_dir),
    ]
    last_good = {}

    class KeepLastGood(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == NAN_STEP:
                last_good.update(_params(module))

    trainer, module, snapshots, error = _fit(out, devices, data, [KeepLastGood(), *callbacks], None, strategy)

    def weights_of(path: Path) -> dict | None:
        if path.is_dir():  # FSDP2's sharded checkpoint: not compared here
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        return {name.removeprefix("model."): value for name, value in state.items()}

    return {
        "error": error,
        "global_step": trainer.global_step,
        "params_changed": snapshots.params_changed,
        "weights_are_last_good": _equal(_params(module), last_good),
        "last_ckpt_is_last_good": _equal(weights_of(ckpt_dir / "last.ckpt"), last_good),
        "exception_ckpt_is_last_good": _equal(weights_of(ckpt_dir / "on_exception.ckpt"), last_good),
    }


def main() -> None:
    out, strategy = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ddp"
    torch.set_num_threads(1)
    result = {"skip_one": skip_one(out / "skip_one", 2, nan_rank=1, strategy=strategy)}
    result["stop_after_k"] = stop_after_k(out / "stop_after_k", 2, nan_rank=0, strategy=strategy)
    (out / f"rank{torch.distributed.get_rank()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
