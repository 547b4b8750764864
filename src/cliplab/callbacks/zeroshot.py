"""Schedules zero-shot evaluations during training and logs `zeroshot/<benchmark>/<metric>`.

Scheduling and logging only; the loop and the math live in `cliplab.eval`. Runs on every rank, each on its
share of the images, so all ranks log the same synced values and ModelCheckpoint can monitor them.
"""

import logging
from collections.abc import Mapping

import pytorch_lightning as pl
from hydra.utils import instantiate

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from cliplab.eval.run import evaluate_zeroshot
from cliplab.eval.zeroshot import ClassifierCache

log = logging.getLogger(__name__)

LOGGED = ("top1", "top5", "mean_recall")


def _model_image_size(pl_module) -> int | None:
    model_cfg = getattr(pl_module, "hparams", {}).get("model") if hasattr(pl_module, "hparams") else None
    return None if model_cfg is None else model_cfg.get("image_size")


class ZeroShotCallback(pl.Callback):
    """Every `every_n_epochs` epochs (at validation end) and/or every `every_n_steps` optimizer steps.

    `benchmarks` maps names to benchmark objects (or their `_target_` configs). `image_size` defaults to the
    model config's `image_size`.
    """

    def __init__(
        self,
        benchmarks: Mapping,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        text_batch_size: int = 1024,
        image_size: int | None = None,
        mean=CLIP_MEAN,
        std=CLIP_STD,
    ):
        super().__init__()
        self.benchmarks = {
            name: instantiate(b) if isinstance(b, Mapping) and "_target_" in b else b
            for name, b in (benchmarks or {}).items()
        }
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.batch_size, self.num_workers, self.text_batch_size = batch_size, num_workers, text_batch_size
        self.image_size, self.mean, self.std = image_size, mean, std
        self._caches = {name: ClassifierCache() for name in self.benchmarks}
        self._ema_caches = {name: ClassifierCache() for name in self.benchmarks}  # the averaged weights' own
        self._last_step = None

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, float]]:
        """Run every benchmark now and log its metrics; returns them. With a moving average of the weights
        (`pl_module.ema`, `conf/ema/`) the benchmarks run again on it, logged as `ema/zeroshot/...`."""
        self._last_step = trainer.global_step
        image_size = self.image_size or _model_image_size(pl_module)
        if image_size is None:
            raise ValueError("ZeroShotCallback needs image_size (none given and none in the model config)")
        transform = eval_transform(image_size, self.mean, self.std)
        results = self._run_benchmarks(trainer, pl_module, transform, "", self._caches)
        ema = getattr(pl_module, "ema", None)
        if ema is not None:
            with ema.swapped_in(pl_module.model):
                results.update(self._run_benchmarks(trainer, pl_module, transform, "ema/", self._ema_caches))
        return results

    def _run_benchmarks(self, trainer, pl_module, transform, prefix: str, caches: dict) -> dict:
        results = {}
        for name, benchmark in self.benchmarks.items():
            metrics = evaluate_zeroshot(
                pl_module.model,
                pl_module.tokenizer,
                benchmark,
                transform,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                cache=caches[name],
                text_batch_size=self.text_batch_size,
            )
            for key in LOGGED:  # values are already equal on every rank: no sync needed
                pl_module.log(
                    f"{prefix}zeroshot/{name}/{key}", metrics[key], rank_zero_only=False, sync_dist=False
                )
            if trainer.is_global_zero:
                log.info("zero-shot %s%s: %s", prefix, name, {k: round(metrics[k], 4) for k in LOGGED})
            results[f"{prefix}{name}"] = metrics
        return results

    def chance_levels(self) -> dict[str, float]:
        """What guessing scores on each logged metric: k / classes for top-k, 1 / classes for mean recall."""
        levels = {}
        for name, benchmark in self.benchmarks.items():
            classes = len(benchmark.classnames)
            levels[f"zeroshot/{name}/top1"] = levels[f"zeroshot/{name}/mean_recall"] = 1 / classes
            levels[f"zeroshot/{name}/top5"] = min(1.0, 5 / classes)
        return levels

    def _due_this_epoch(self, trainer) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.training or self._last_step == trainer.global_step:
            return
        if self._due_this_epoch(trainer) and trainer.is_last_batch:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # without a validation loop, the epoch schedule runs here (after validation it already ran)
        if self._due_this_epoch(trainer) and self._last_step != trainer.global_step:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and self._last_step != step:
            self.evaluate(trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.evaluate(trainer, pl_module)
