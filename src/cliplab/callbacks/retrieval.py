"""Logs image<->text recall@k on the paired validation data: `retrieval/<name>/image_to_text_R@k`, ...

Scheduling and logging only; features are the ones `validation_step` computed (a module without them is
encoded here), and recall is computed over the gallery of all ranks by `cliplab.eval.run`. With `ema=`, the
moving average's features are scored too, as `ema/retrieval/<name>/...`.
"""

import pytorch_lightning as pl
import torch

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD
from cliplab.eval.run import RetrievalAccumulator


class RetrievalCallback(pl.Callback):
    """Recall@k on validation batches `(images, tokens [B,L] or [B,K,L])`, every `every_n_epochs` epochs."""

    def __init__(self, name: str = "val", ks=(1, 5, 10), every_n_epochs: int = 1, dataloader_idx: int = 0,
                 examples: int = 6, mean=CLIP_MEAN, std=CLIP_STD):  # fmt: skip
        super().__init__()
        self.name, self.every_n_epochs, self.dataloader_idx = name, every_n_epochs, dataloader_idx
        # `examples` captions with their top-5 images for the retrieval sheet (mean/std turn images back
        # into pixels: the data module's validation transform's when it has one); 0 keeps none
        self.accumulator = RetrievalAccumulator(ks, examples=examples, mean=mean, std=std)
        self.examples = None
        self.ema_accumulator = RetrievalAccumulator(ks, examples=0)  # validation_step's EMA features
        self.gallery_sizes: tuple[int, int] | None = (
            None  # (images, captions) over all ranks, last evaluation
        )

    def chance_levels(self) -> dict[str, float]:
        """Recall@k of a random ranking: k / captions (image to text), k / images (text to image)."""
        if self.gallery_sizes is None:
            return {}
        images, captions = self.gallery_sizes
        levels = {}
        for k in self.accumulator.ks:
            levels[f"retrieval/{self.name}/image_to_text_R@{k}"] = min(1.0, k / captions)
            levels[f"retrieval/{self.name}/text_to_image_R@{k}"] = min(1.0, k / images)
        return levels

    def picture_data(self) -> dict[str, dict]:
        """The last evaluation's rankings of a few captions, for the retrieval sheet (cliplab.eval.pictures)."""
        return {} if self.examples is None else {f"retrieval/{self.name}": {"retrieval": self.examples}}

    def _active(self, trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return not trainer.training or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.accumulator.reset()
        self.ema_accumulator.reset()
        transform = getattr(getattr(trainer, "datamodule", None), "val_transform", None)
        if hasattr(transform, "mean") and hasattr(
            transform, "std"
        ):  # the sheet's pixels: undo its normalisation
            self.accumulator.mean, self.accumulator.std = tuple(transform.mean), tuple(transform.std)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if dataloader_idx != self.dataloader_idx or not self._active(trainer):
            return
        if isinstance(outputs, dict) and "image_features" in outputs:  # validation_step's own features
            self.accumulator.add(outputs["image_features"], outputs["text_features"], batch[0], batch[1])
            if "ema" in outputs:
                self.ema_accumulator.add(outputs["ema"]["image_features"], outputs["ema"]["text_features"])
        else:
            self.accumulator.update(pl_module.model, batch[0], batch[1])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active(trainer) or not self.accumulator.image_feats:
            return
        local = torch.tensor([self.accumulator.n_images, sum(len(t) for t in self.accumulator.text_feats)])
        self.gallery_sizes = tuple(int(n) for n in trainer.strategy.reduce(local, reduce_op="sum"))
        # equal on every rank (galleries gathered)
        metrics = {"": self.accumulator.compute(decode=getattr(pl_module.tokenizer, "decode", None))}
        self.examples = self.accumulator.examples
        if self.ema_accumulator.image_feats:
            metrics["ema/"] = self.ema_accumulator.compute()
        for tag, values in metrics.items():
            for key, value in values.items():
                pl_module.log(
                    f"{tag}retrieval/{self.name}/{key}", value, rank_zero_only=False, sync_dist=False
                )
        self.accumulator.reset()
        self.ema_accumulator.reset()
