"""Lightning's checkpoint callbacks, writing atomically (`cliplab.checkpoints.atomic`).

`conf/callbacks/default.yaml` combines three `AtomicModelCheckpoint`s: the last K by step (plus
`last.ckpt`), the best K by a named metric (`val/loss`), and one by training time.
"""

from datetime import timedelta

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint

from cliplab.checkpoints.atomic import save_atomically


class AtomicModelCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose files and folders appear only once complete.

    Args:
        every_n_minutes: `train_time_interval` in minutes (config-friendly); null: not by time.
        save_final: also save at the end of training when the last step was not saved yet (Lightning
            only does so for `last.ckpt` of a callback that never saved), so the final state is a
            resume point of its own.
        Everything else as `ModelCheckpoint`.
    """

    def __init__(self, *args, every_n_minutes: float | None = None, save_final: bool = False, **kwargs):
        if every_n_minutes is not None:
            kwargs["train_time_interval"] = timedelta(minutes=every_n_minutes)
        super().__init__(*args, **kwargs)
        self.save_final = save_final

    def _save_checkpoint(self, trainer: "pl.Trainer", filepath: str) -> None:
        save_atomically(trainer, filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            from weakref import proxy

            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.save_final and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


class AtomicOnExceptionCheckpoint(OnExceptionCheckpoint):
    """`OnExceptionCheckpoint` (the state when the run raised), written atomically.

    A preemption (SIGTERM) is not a crash: `PreemptionCheckpoint` saves that one as a resume point.
    """

    def on_exception(self, trainer: "pl.Trainer", pl_module, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            return
        save_atomically(trainer, self.ckpt_path)
