"""Checkpoints a crash cannot lose: atomic writes, keep-last-K + best-K, `ckpt_path=last`, preemption,
sharded folders consolidated on load."""

import errno
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from cliplab.callbacks.checkpoints import AtomicModelCheckpoint
from cliplab.checkpoints.atomic import partial_path, publish, save_atomically
from cliplab.checkpoints.find import newest_checkpoint, resolve_ckpt_path
from cliplab.utils.errors import ConfigError
from tests._torchrun import torchrun

ROOT = Path(__file__).resolve().parents[1]

KILLED_WRITE = """
import os, sys, torch
from cliplab.checkpoints.atomic import save_atomically

class Strategy:
    def barrier(self, name=None):
        pass

class Trainer:  # save_checkpoint writes half of a real checkpoint, then the process dies
    is_global_zero, strategy = True, Strategy()

    def save_checkpoint(self, path, weights_only=False):
        torch.save({"state_dict": {"w": torch.ones(1000)}, "global_step": 9}, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os._exit(1)

save_atomically(Trainer(), sys.argv[1])
"""


def _save(path: Path, step: int) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": step}, path)


def test_a_write_killed_halfway_is_never_picked(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _save(ckpts / "step_00000004.ckpt", 4)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(ckpts / "step_00000009.ckpt")], env=env)
    assert proc.returncode == 1
    assert (
        not (ckpts / "step_00000009.ckpt").exists() and partial_path(ckpts / "step_00000009.ckpt").is_file()
    )
    # a truncated file under a checkpoint name (a copy killed halfway, not written by cliplab) is skipped too
    (ckpts / "step_00000010.ckpt").write_bytes((ckpts / "step_00000004.ckpt").read_bytes()[:200])
    for value in ("last", str(tmp_path), str(ckpts)):
        assert resolve_ckpt_path(value, tmp_path) == str(ckpts / "step_00000004.ckpt")
    with pytest.raises(ConfigError, match="not a complete checkpoint") as err:
        resolve_ckpt_path(str(ckpts / "step_00000010.ckpt"), tmp_path)
    assert "\n" not in str(err.value)


def test_last_resolution(tmp_path):
    assert resolve_ckpt_path("last", tmp_path) is None  # a fresh run (or a requeued job's first start)
    assert resolve_ckpt_path(None, tmp_path) is None
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _save(ckpts / "step_00000002.ckpt", 2)
    _save(ckpts / "on_exception.ckpt", 3)  # the state of a crash: never a resume point by itself
    assert newest_checkpoint(ckpts) == ckpts / "step_00000002.ckpt"
    # a sharded folder is complete once its metadata is written (Lightning writes meta.pt last)
    folder = ckpts / "step_00000005.ckpt"
    folder.mkdir()
    (folder / ".metadata").write_bytes(b"x")
    assert newest_checkpoint(ckpts) == ckpts / "step_00000002.ckpt"
    torch.save({}, folder / "meta.pt")
    assert resolve_ckpt_path("last", tmp_path) == str(folder)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope"), tmp_path)


def test_publish_replaces_a_folder_checkpoint(tmp_path):
    final = tmp_path / "last.ckpt"
    for step in (1, 2):
        partial = partial_path(final)
        partial.mkdir()
        (partial / "step").write_text(str(step))
        publish(partial, final)
    assert (final / "step").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class Tiny(pl.LightningModule):
    """Logs a val/loss that is best at epochs 1 and 2 (of 0..3)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", [3.0, 1.0, 2.0, 4.0][self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_keep_last_k_and_best_k_leave_exactly_the_expected_files(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)  # 4 steps per epoch, 16 in all
    last_k = AtomicModelCheckpoint(
        dirpath=tmp_path, filename="step_{step:08d}", auto_insert_metric_name=False, every_n_train_steps=3,
        monitor="step", mode="max", save_top_k=2, save_last="link", save_final=True,
    )  # fmt: skip
    best_k = AtomicModelCheckpoint(
        dirpath=tmp_path, filename="best_step_{step:08d}", auto_insert_metric_name=False,
        monitor="val/loss", mode="min", save_top_k=2,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=4, callbacks=[last_k, best_k], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Tiny(), train_dataloaders=data, val_dataloaders=data)
    # steps 3, 6, 9, 12, 15 by step and 16 at the end: the last two stay; best val/loss: epochs 1 and 2
    expected = ["best_step_00000008.ckpt", "best_step_00000012.ckpt", "last.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        *expected,
        "step_00000015.ckpt",
        "step_00000016.ckpt",
    ]
    assert (tmp_path / "last.ckpt").resolve().name == "step_00000016.ckpt"
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 16
    assert resolve_ckpt_path(str(tmp_path), tmp_path).endswith(("last.ckpt", "step_00000016.ckpt"))


# ---- preemption: a real training process, SIGTERM mid-training, then ckpt_path=last ----------------------

TRAIN = [
    "data=emoji",
    "logger=csv",
    "data.num_workers=0",
    "data.batch_size=16",
    "evals=none",
    "test=false",
    "trainer.max_steps=60",
    "trainer.limit_val_batches=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.retrieval=null",
    "callbacks.model_checkpoint.every_n_train_steps=5",
]


def _train(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "CLIPLAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = str(ROOT / "src")
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *TRAIN,
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_sigterm_saves_a_checkpoint_exits_cleanly_and_resumes(emoji_ready, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    proc = _train(tmp_path)
    deadline = time.monotonic() + 300
    while not (ckpts / "step_00000005.ckpt").exists():  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "preempted at step" in output
    last = ckpts / "last.ckpt"
    assert last.is_file() and not last.is_symlink()  # written by the preemption callback
    step = torch.load(last, weights_only=True)["global_step"]
    assert 5 <= step < 60
    assert not list(ckpts.glob(".*"))  # no partial writes left
    assert not (tmp_path / "run" / "metrics.json").exists()  # stopped, not finished

    resumed = _train(tmp_path, "ckpt_path=last")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"ckpt_path=last resumes from {last}" in output or "Restoring states" in output
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 60
    assert (tmp_path / "run" / "metrics.json").is_file()


# ---- sharded folders: an FSDP2 distributed checkpoint made by 2 gloo processes ----------------------------


@pytest.fixture(scope="module")
def fsdp_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(ROOT / "tests" / "_mp_train_script.py", "fsdp", out, "save-only", timeout=400)
    assert (out / "epoch0.ckpt").is_dir()
    return out / "epoch0.ckpt"


def test_fsdp2_folder_is_consolidated_and_the_model_rebuilt_from_its_hyperparameters(fsdp_folder):
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    from cliplab.checkpoints.load import check_safe, load_module

    assert check_safe(fsdp_folder) == "dcp"
    module = load_module(fsdp_folder)
    saved = _load_state_dict_from_keys("state_dict", checkpoint_id=str(fsdp_folder))["state_dict"]
    got = module.state_dict()
    assert set(got) == set(saved) and all(torch.equal(got[k], saved[k]) for k in saved)
    assert module.model.visual.output_dim == module.hparams.model["embed_dim"]


def test_eval_and_sweep_resume_accept_the_folder(fsdp_folder, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cliplab.checkpoints.resume import resume_path
    from cliplab.eval.run import load_model
    from cliplab.sweeps import jobs

    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    os.symlink(fsdp_folder, job / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.create({"paths": {"output_dir": str(job)}, "ckpt_path": None, "sweep_resume": True})
    monkeypatch.setattr(jobs, "_hydra_job", lambda: (True, str(tmp_path), "seed=1"))
    cfg = jobs.start_job(cfg).cfg
    assert cfg.ckpt_path == str(job / "checkpoints" / "last.ckpt")
    # under DDP a sharded folder cannot resume: one line naming the strategy that can
    cfg.trainer = {"strategy": "ddp"}
    with pytest.raises(ConfigError, match="trainer=fsdp"):
        resume_path(cfg)
    cfg.trainer = {"strategy": {"_target_": "cliplab.lit.sharding.FSDP2Strategy"}}
    assert resume_path(cfg) == str(job / "checkpoints" / "last.ckpt")
    model, _, image_size, source = load_model(
        OmegaConf.create({"ckpt_path": str(job), "output_dir": str(job)})
    )
    assert source == str(job / "checkpoints" / "last.ckpt") and image_size == 32
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), torch.randint(1, 999, (2, 16)))
    assert torch.isfinite(out["image_features"]).all()


class SignalsItself(Tiny):
    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().training_step(batch, batch_idx)


def test_slurm_requeue_signal_saves_at_a_step_boundary_and_requeues(tmp_path, monkeypatch):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from cliplab.callbacks import preemption
    from cliplab.callbacks.preemption import PreemptionCheckpoint

    calls = []
    monkeypatch.setattr(
        preemption.subprocess,
        "run",
        lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0),
    )
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    callback = PreemptionCheckpoint(dirpath=str(tmp_path), requeue_signal="SIGUSR1")
    trainer = pl.Trainer(
        max_steps=10, callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False,
         accelerator="cpu", limit_val_batches=0,
    )  # fmt: skip
    with pytest.raises(SIGTERMException):
        trainer.fit(
            SignalsItself(), train_dataloaders=DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=2)
        )
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3  # the step that got it
    assert calls == [["scontrol", "requeue", "1234"]]
    assert signal.getsignal(signal.SIGUSR1) is not callback  # restored after the run


def test_slurm_preset_turns_off_lightnings_handler_and_requeues_on_sigusr1():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    preset = OmegaConf.load(ROOT / "conf" / "cluster" / "slurm.yaml")  # its launcher plugin is optional
    (plugin,) = instantiate(preset.trainer.plugins)
    assert plugin.auto_requeue is False
    assert preset.callbacks.preemption_checkpoint.requeue_signal == "SIGUSR1"


def test_a_full_disk_while_writing_keeps_the_previous_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _save(ckpts / "step_00000004.ckpt", 4)
    before = (ckpts / "step_00000004.ckpt").read_bytes()

    def save_checkpoint(path, weights_only=False):  # writes part of the file, then the disk is full
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer = types.SimpleNamespace(
        is_global_zero=True,
        strategy=types.SimpleNamespace(barrier=lambda *a: None),
        save_checkpoint=save_checkpoint,
    )
    with pytest.raises(OSError, match="No space left"):
        save_atomically(trainer, ckpts / "step_00000008.ckpt")
    assert not (ckpts / "step_00000008.ckpt").exists()
    assert (ckpts / "step_00000004.ckpt").read_bytes() == before
    assert resolve_ckpt_path("last", tmp_path) == str(ckpts / "step_00000004.ckpt")
