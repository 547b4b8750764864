"""Schedules every `evals` entry during training and logs `<prefix>/<metric>`.

Scheduling and logging only: the evaluators (cliplab.eval.evaluators) hold the loops and the math. Every
rank runs every due entry (each on its share of the data; the evaluators sum or gather across ranks), so
all ranks take part in the same collectives and log the same values, and ModelCheckpoint can monitor them.
"""

import logging
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from cliplab.eval.evaluator import EvalContext, EvalEntry, build_entries

log = logging.getLogger(__name__)


def _model_image_size(pl_module) -> int | None:
    model_cfg = getattr(pl_module, "hparams", {}).get("model") if hasattr(pl_module, "hparams") else None
    return None if model_cfg is None else model_cfg.get("image_size")


class EvalsCallback(pl.Callback):
    """Runs each entry on its schedule: every N epochs (at validation end, or at the training epoch's end
    without a validation loop), every N optimizer steps, and at the end of training unless it already ran
    at the final step (those metrics go to `trainer.callback_metrics` and the loggers directly: Lightning
    allows no `log` call there)."""

    def __init__(
        self,
        evals: Mapping | Sequence[EvalEntry],
        image_size: int | None = None,
        mean=CLIP_MEAN,
        std=CLIP_STD,
    ):
        super().__init__()
        self.entries = list(evals) if isinstance(evals, Sequence) else build_entries(evals)
        self.image_size, self.mean, self.std = image_size, mean, std
        self.results: dict[str, dict[str, float]] = {}  # by entry name (ema/<name>): the last metrics
        self._pictures: dict[str, dict] = {}  # by entry name (ema/<name>): what the last run kept to draw

    def context(self, trainer, pl_module) -> EvalContext:
        image_size = self.image_size or _model_image_size(pl_module)
        if image_size is None:
            raise ValueError("EvalsCallback needs image_size (none given and none in the model config)")
        transform = eval_transform(image_size, self.mean, self.std)
        return EvalContext(pl_module.tokenizer, transform, trainer.global_rank, trainer.world_size)

    def run_entries(self, trainer, pl_module, entries: list[EvalEntry], log_now: bool = True) -> dict:
        """Run `entries` now; returns `{prefixed metric: value}` (logged through `pl_module.log` when
        `log_now`). Values are equal on every rank already: no sync."""
        if not entries:
            return {}
        context = self.context(trainer, pl_module)
        logged = self._run_and_log(trainer, pl_module, entries, context, "", log_now)
        ema = getattr(
            pl_module, "ema", None
        )  # a moving average of the weights (conf/ema/): `ema/<prefix>/...`
        if ema is not None:
            with ema.swapped_in(pl_module.model):
                logged |= self._run_and_log(trainer, pl_module, entries, context, "ema/", log_now)
        return logged

    def _run_and_log(self, trainer, pl_module, entries, context, tag: str, log_now: bool) -> dict:
        logged = {}
        for entry in entries:
            entry.last_step = trainer.global_step
            metrics = entry.evaluator.run(pl_module.model, context)
            self.results[f"{tag}{entry.name}"] = metrics
            if hasattr(entry.evaluator, "picture_data"):  # taken now: the EMA run reuses the evaluator
                self._pictures[f"{tag}{entry.name}"] = entry.evaluator.picture_data()
            for metric, value in metrics.items():
                key = f"{tag}{entry.key(metric)}"
                logged[key] = float(value)
                if log_now:
                    pl_module.log(key, float(value), rank_zero_only=False, sync_dist=False)
            if trainer.is_global_zero:
                log.info("%s%s: %s", tag, entry.prefix, {k: round(float(v), 4) for k, v in metrics.items()})
        return logged

    def _not_yet(self, trainer, wanted) -> list[EvalEntry]:
        return [e for e in self.entries if wanted(e) and e.last_step != trainer.global_step]

    def chance_levels(self) -> dict[str, float]:
        return {e.key(m): level for e in self.entries for m, level in e.evaluator.chance_levels().items()}

    def metric_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{tag}{e.prefix}/" for e in self.entries for tag in ("", "ema/"))

    def picture_data(self) -> dict[str, dict]:
        """By entry name (ema/<name>): what its last run kept for the pictures (cliplab.eval.pictures)."""
        return dict(self._pictures)

    def provenance(self) -> dict[str, dict]:
        """By entry name: what produced its last numbers (entries that have not run yet are left out)."""
        return {
            e.name: {"prefix": e.prefix, "step": e.last_step, **e.evaluator.provenance()}
            for e in self.entries
            if e.last_step is not None
        }

    # ---- schedule ---------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.training or not trainer.is_last_batch:
            return
        epoch = trainer.current_epoch
        self.run_entries(trainer, pl_module, self._not_yet(trainer, lambda e: e.schedule.due_at_epoch(epoch)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # without a validation loop the epoch schedule runs here (after validation it already ran)
        epoch = trainer.current_epoch
        self.run_entries(trainer, pl_module, self._not_yet(trainer, lambda e: e.schedule.due_at_epoch(epoch)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.run_entries(trainer, pl_module, self._not_yet(trainer, lambda e: e.schedule.due_at_step(step)))

    def on_train_end(self, trainer, pl_module) -> None:
        logged = self.run_entries(
            trainer, pl_module, self._not_yet(trainer, lambda e: e.schedule.at_end), log_now=False
        )
        if not logged:
            return
        for key, value in logged.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(logged, step=trainer.global_step)
                logger.save()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.run_entries(trainer, pl_module, self.entries)
