"""The default training setup makes the host wait for the device only on the steps Lightning logs.

On a GPU, `.item()`, `float(tensor)`, `torch.cuda.synchronize()` or a device tensor made from a Python number
make the CPU wait until the GPU has run everything queued. These tests run CLIPModule with the default
callbacks (conf/callbacks/default.yaml) through the real Trainer: on the CPU, counting such calls per step; on
a GPU, under `torch.cuda.set_sync_debug_mode("error")`.
"""

import numbers
import traceback
from collections import defaultdict
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.utilities.throughput import Throughput
from omegaconf import OmegaConf
from pytorch_lightning.loggers import Logger

from cliplab.callbacks.progress import ClipProgressBar
from cliplab.lit.module import CLIPModule
from tests._tiny import LOSS, MODEL, TinyBatches

BATCH = 4  # pairs per TinyBatches batch, with full-context tokens (the nominal FLOPs)
LOG_EVERY = 3
STEPS_PER_EPOCH = 4
EPOCHS = 2  # 8 steps; the second epoch's first step resets Lightning's per-epoch state
LOGGING_STEPS = [2, 5]  # Lightning logs step k when (k + 1) % log_every_n_steps == 0
SECONDS_PER_STEP = 10.0  # the throughput monitor's clock, faked: every step takes 10 s
VAL_SECONDS_PER_BATCH = 500.0
PEAK_FLOPS = 1e9


class _FourBatches(TinyBatches):
    def __len__(self):
        return STEPS_PER_EPOCH


class _Recorder(Logger):
    """Keeps what Lightning sends to the loggers, by step."""

    def __init__(self):
        super().__init__()
        self.steps: dict[int, dict] = defaultdict(dict)

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.steps[step].update(metrics)


class _Steps(pl.Callback):
    """First in the callback list: knows which training step runs (from its `on_train_batch_start` to the
    next one's, or to the epoch's end), advances the fake clock, and records what the progress bar shows."""

    def __init__(self):
        self.step: int | None = None
        self.clock = 0.0
        self.bar: ClipProgressBar | None = None  # set by _fit
        self.shown: dict[int, float | None] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        self.clock += SECONDS_PER_STEP
        if self.bar is not None:
            self.shown[self.step] = self.bar._shown.get("train/loss")

    def on_train_epoch_end(self, trainer, pl_module):
        self.step = None

    def on_validation_batch_start(self, trainer, *args):
        if not trainer.sanity_checking:
            self.clock += VAL_SECONDS_PER_BATCH


def _fit(
    cfg, steps: _Steps, accelerator: str, data, precision: str, val_data=None
) -> tuple[pl.Trainer, CLIPModule, _Recorder]:
    """The default callbacks (throughput with a 4-batch window and a CPU peak) on the tiny CLIP."""
    callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items() if node is not None}
    callbacks["throughput"] = instantiate(cfg.callbacks.throughput, window_size=4, peak_flops=PEAK_FLOPS)
    steps.bar = callbacks["progress_bar"]
    assert isinstance(steps.bar, ClipProgressBar)
    module = CLIPModule(
        model=MODEL,
        loss=LOSS,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
    )
    recorder = _Recorder()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=EPOCHS,
        log_every_n_steps=LOG_EVERY,
        logger=recorder,
        callbacks=[steps, *callbacks.values()],
        default_root_dir=cfg.paths.output_dir,
    )
    val = None if val_data is None else torch.utils.data.DataLoader(val_data, batch_size=None)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None), val)
    return trainer, module, recorder


class _SyncCounter:
    """Records, by training step, the calls that would make the host wait for a GPU."""

    def __init__(self, monkeypatch, steps: _Steps):
        self.steps = steps
        self.calls: dict[int, list[str]] = defaultdict(list)
        for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
            self._count(monkeypatch, torch.Tensor, name, f"Tensor.{name}")
        self._count(monkeypatch, torch.cuda, "synchronize", "torch.cuda.synchronize")
        # A throughput timing point: the monitor synchronises with the GPU before reading the clock.
        self._count(monkeypatch, Throughput, "update", "Throughput.update")
        for name in ("tensor", "as_tensor"):  # a Python number to a tensor: a host-to-device copy on a GPU
            self._count(monkeypatch, torch, name, f"torch.{name}(<number>)", only_numbers=True)

    def _count(self, monkeypatch, owner, name: str, label: str, only_numbers: bool = False) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if self.steps.step is not None and (not only_numbers or isinstance(args[0], numbers.Number)):
                where = "".join(traceback.format_stack(limit=4)[:-1])
                self.calls[self.steps.step].append(f"{label} at\n{where}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def _fake_clock(monkeypatch, steps: _Steps) -> None:
    fake_time = SimpleNamespace(perf_counter=lambda: steps.clock)
    monkeypatch.setattr("cliplab.callbacks.throughput.time", fake_time, raising=False)
    monkeypatch.setattr("pytorch_lightning.callbacks.throughput_monitor.time", fake_time)


def test_no_host_device_sync_outside_logging_steps(cfg_factory, monkeypatch):
    steps = _Steps()
    counter = _SyncCounter(monkeypatch, steps)
    _fake_clock(monkeypatch, steps)
    trainer, module, recorder = _fit(cfg_factory(), steps, "cpu", _FourBatches(), "bf16-mixed")

    logged = sorted(step for step, metrics in recorder.steps.items() if "train/loss" in metrics)
    assert logged == LOGGING_STEPS
    # The first step is exempt: Lightning creates each logged metric's state then (from Python numbers).
    for step in range(1, EPOCHS * STEPS_PER_EPOCH):
        if step not in LOGGING_STEPS:
            assert not counter.calls[step], f"step {step}:\n" + "\n".join(counter.calls[step])
    assert all(counter.calls[step] for step in LOGGING_STEPS)  # the counter does see the logging steps

    # Logged values: the counters as of each logging step, throughput over whole logging intervals.
    per_sample = module.flops_per_sample
    for step in LOGGING_STEPS:
        metrics, samples = recorder.steps[step], BATCH * (step + 1)
        assert metrics["train/samples_seen"] == samples
        # float32, as Lightning logged the Python number before
        assert metrics["train/flops_seen"] == pytest.approx(per_sample * samples, rel=1e-6)
        assert metrics["train/batches"] == step + 1 and metrics["train/samples"] == samples
        assert metrics["train/time"] == SECONDS_PER_STEP * (step + 1)
        # training health (on the device every step, read on logging steps): finite steps, none skipped
        assert metrics["train/skipped_steps"] == 0 and 0 < metrics["train/grad_norm"] < float("inf")
        assert 1 < metrics["train/logit_scale"] <= 100  # exp of the clamped parameter, as the loss uses it
    assert "train/device/samples_per_sec" not in recorder.steps[2]  # the window (3 batches) is not full yet
    # steps 3-5 in 30 s: what Lightning's per-batch monitor reports with the same window
    rates = recorder.steps[5]
    assert rates["train/device/batches_per_sec"] == pytest.approx(3 / 30)
    assert rates["train/device/samples_per_sec"] == pytest.approx(3 * BATCH / 30)
    assert rates["train/device/flops_per_sec"] == pytest.approx(3 * BATCH * per_sample / 30)
    assert rates["train/device/mfu"] == pytest.approx(3 * BATCH * per_sample / 30 / PEAK_FLOPS)
    # every batch counted towards the checkpointed FLOPs, logged or not
    assert _flops_seen(trainer) == per_sample * BATCH * EPOCHS * STEPS_PER_EPOCH
    assert float(trainer.callback_metrics["train/samples_seen"]) == module.samples_seen

    # The progress bar shows the loss as of the last logging step (and of the epoch's end).
    assert steps.shown[1] is None
    assert steps.shown[3] == pytest.approx(recorder.steps[2]["train/loss"])
    assert steps.shown[5] == steps.shown[4] is not None


def test_training_throughput_leaves_out_validation_time(cfg_factory, monkeypatch):
    """Validation after step 3 takes 1000 s; the rates at step 5 (steps 4-5 since the last measurement, taken
    when validation started) are those of training alone."""
    steps = _Steps()
    _fake_clock(monkeypatch, steps)
    _, _, recorder = _fit(cfg_factory(), steps, "cpu", _FourBatches(), "bf16-mixed", val_data=TinyBatches())
    rates = recorder.steps[5]
    assert rates["train/time"] == SECONDS_PER_STEP * 6
    assert rates["train/device/batches_per_sec"] == pytest.approx(1 / SECONDS_PER_STEP)
    assert rates["train/device/samples_per_sec"] == pytest.approx(BATCH / SECONDS_PER_STEP)


class _ValidationSteps(_Steps):
    """Also marks each validation batch (keys from 1000 on), from its start to the module's own batch-end
    hook (Lightning runs it after the callbacks'); what runs once per validation after its last batch (metric
    aggregation, retrieval) may synchronise."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx)
        if not trainer.sanity_checking:
            self.step = 1000 + len(self.validation_batches)
            self.validation_batches.append(self.step)

    def __init__(self):
        super().__init__()
        self.validation_batches: list[int] = []


def test_validation_batches_do_not_sync_and_validation_is_timed_whole(cfg_factory, monkeypatch):
    steps = _ValidationSteps()
    monkeypatch.setattr(CLIPModule, "on_validation_batch_end", lambda *_, **__: setattr(steps, "step", None))
    counter = _SyncCounter(monkeypatch, steps)
    _fake_clock(monkeypatch, steps)
    _, module, recorder = _fit(
        cfg_factory(), steps, "cpu", _FourBatches(), "bf16-mixed", val_data=TinyBatches()
    )

    assert len(steps.validation_batches) == EPOCHS * len(TinyBatches())
    # The first validation batch is exempt: the forward FLOPs are counted then, once, on the meta device.
    for key in steps.validation_batches[1:]:
        assert not counter.calls[key], f"validation batch {key - 1000}:\n" + "\n".join(counter.calls[key])
    # One measurement per validation: its batches over its time; forward FLOPs only (1/3 of training's).
    rates = [m for m in recorder.steps.values() if "validate/device/samples_per_sec" in m]
    assert len(rates) == EPOCHS
    forward = module._flops_at(None, training=False)
    assert 0.2 < forward / module.flops_per_sample < 0.5
    for metrics in rates:
        assert metrics["validate/device/samples_per_sec"] == pytest.approx(BATCH / VAL_SECONDS_PER_BATCH)
        assert metrics["validate/device/flops_per_sec"] == pytest.approx(
            forward * BATCH / VAL_SECONDS_PER_BATCH
        )
        assert metrics["validate/batches"] == len(TinyBatches())


@pytest.mark.gpu
def test_no_cuda_sync_outside_logging_steps(cfg_factory):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")

    class _SyncDebug(_Steps):
        """Any synchronising CUDA call raises on steps that are not logged (the first one exempt)."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            silent = self.step >= 1 and self.step not in LOGGING_STEPS
            torch.cuda.set_sync_debug_mode("error" if silent else "default")

        def on_train_epoch_end(self, trainer, pl_module):
            torch.cuda.set_sync_debug_mode("default")
            super().on_train_epoch_end(trainer, pl_module)

    # Batches already on the GPU: the data path (pinned memory, worker processes) is not under test here.
    data = [[t.cuda() for t in batch] for batch in _FourBatches()]
    try:
        trainer, module, recorder = _fit(cfg_factory(), _SyncDebug(), "gpu", data, "bf16-mixed")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sorted(s for s, m in recorder.steps.items() if "train/loss" in m) == LOGGING_STEPS
    assert recorder.steps[5]["train/samples_seen"] == BATCH * 6
    assert _flops_seen(trainer) == module.flops_per_sample * BATCH * EPOCHS * STEPS_PER_EPOCH


def _flops_seen(trainer) -> float:
    """The checkpointed FLOPs count, owned by the throughput callback."""
    return next(c.flops_seen for c in trainer.callbacks if hasattr(c, "flops_seen"))
