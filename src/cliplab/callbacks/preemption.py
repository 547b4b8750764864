"""Preemption: SIGTERM (and SLURM's requeue signal) saves `last.ckpt` atomically and ends the run cleanly.

Built on Lightning's own SIGTERM handling: the flag `trainer.received_sigterm`, and the training loop
raising `SIGTERMException` (a `SystemExit`, exit status 0) at the next batch boundary. This callback saves
the checkpoint in `on_exception` there, so all ranks write one consistent state with the usual collectives.
Its SIGTERM handler replaces Lightning's, which also broadcasts from inside the signal handler: with the
signal reaching every rank at once (a scheduler signals the whole job), those broadcasts interleave with
the training's collectives and the ranks hang.

With several ranks, the handler only records the request; the ranks agree on it at the end of each
training batch (one boolean reduction), and only then is Lightning's flag set, on all of them at once.
Lightning also checks the flag on each rank alone at the end of a batch: a signal that reached one rank
just before that check and another just after it stopped the first rank a step early, and the second
waited in the next step's collective for ever (seen as a hung 2-process run in the test suite).

With `requeue_signal` (SIGUSR1 under `cluster=slurm`) that signal stops the run the same way, then rank 0
requeues the job (`scontrol requeue`); the requeued job resumes from the newest complete checkpoint of its
run directory. Lightning's own SLURM handler is switched off there (`auto_requeue: false`): it saves from
inside the signal handler, mid-step and on each rank on its own, which sharded checkpoints cannot do.
"""

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from cliplab.checkpoints.atomic import save_atomically

log = logging.getLogger("cliplab")


class PreemptionCheckpoint(Checkpoint):
    """Saves `<dirpath>/<filename>.ckpt` when the run is stopped by SIGTERM or `requeue_signal`."""

    def __init__(self, dirpath: str, filename: str = "last", requeue_signal: str | None = None):
        super().__init__()
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.requeue_signal = getattr(signal, requeue_signal) if requeue_signal else None
        self.requeue = False
        self._stop_requested = False  # by a signal on this rank; several ranks agree on it per batch
        self._previous_handler = self._previous_sigterm = None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # after Lightning registered its handlers, so these replace them
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._stop_for_sigterm(trainer))
        if self.requeue_signal is not None:
            self._previous_handler = signal.signal(self.requeue_signal, self._stop_for_requeue(trainer))

    def _request_stop(self, trainer: "pl.Trainer") -> None:
        """Stop at the next batch boundary: at once in one process, by agreement with several."""
        if trainer.world_size > 1:
            self._stop_requested = True  # no collective in a signal handler: on_train_batch_end agrees
        else:
            trainer._signal_connector.received_sigterm = True

    def _stop_for_sigterm(self, trainer: "pl.Trainer"):
        def handler(signum, frame) -> None:
            launcher = trainer.strategy.launcher
            first = not (self._stop_requested or trainer._signal_connector.received_sigterm)
            if first and launcher is not None:
                launcher.kill(signum)  # ranks this process started get it too (as Lightning's handler does)
            self._request_stop(trainer)

        return handler

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module, outputs, batch, batch_idx) -> None:
        # before the loop's own, per-rank check of the flag at this batch's end: every rank sets it or none
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(
            self._stop_requested, all=False
        ):
            trainer._signal_connector.received_sigterm = True

    def _stop_for_requeue(self, trainer: "pl.Trainer"):
        def handler(signum, frame) -> None:
            log.info(
                "received %s: saving a checkpoint at the next step, then requeueing",
                signal.Signals(signum).name,
            )
            self.requeue = True
            self._request_stop(trainer)  # the loop stops at the next batch boundary

        return handler

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if getattr(self, "_previous_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self._previous_handler is not None:
            signal.signal(self.requeue_signal, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException
    ) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        save_atomically(trainer, self.path)
        if trainer.is_global_zero:
            run_dir = self.path.parent.parent
            log.warning(
                "preempted at step %d: saved %s; resume with ckpt_path=last (same run directory) or ckpt_path=%s",
                trainer.global_step,
                self.path,
                run_dir,
            )
            if self.requeue:
                requeue_slurm_job()


def requeue_slurm_job() -> None:
    """`scontrol requeue` this SLURM job (array jobs by their task id)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job:
        log.warning("requeue signal received outside a SLURM job: not requeued")
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed: %s", job, (result.stderr or result.stdout).strip())
