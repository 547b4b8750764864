"""Image <-> text retrieval on any paired source training can read (table, caption folder, shards)."""

from pathlib import Path

import torch

from cliplab.data.datamodule import CLIPDataModule
from cliplab.data.table_source import TABLE_SUFFIXES
from cliplab.data.transforms import CLIP_MEAN, CLIP_STD
from cliplab.eval.evaluator import EvalContext
from cliplab.eval.lockstep import Lockstep, batch_count
from cliplab.eval.provenance import digest, file_sha256, transform_description
from cliplab.eval.run import RetrievalAccumulator
from cliplab.utils.errors import DataError


class PairedRetrieval:
    """Recall@k both ways (cliplab.eval.retrieval) over every pair of `data`.

    `data` is a source of cliplab.data (TableSource, FolderSource, WebDatasetSource) or a path string
    (a .csv/.tsv/.parquet table, else a shard specification), read by the data module exactly as a
    validation split is: the even split over ranks, the eval transform, the model's tokenizer. Each rank
    encodes its share; the galleries are gathered, so every rank returns the same recall.
    """

    def __init__(self, data, ks=(1, 5, 10), batch_size: int = 256, num_workers: int = 0, examples: int = 6):
        self.data, self.ks = data, tuple(int(k) for k in ks)
        self.n_examples = int(examples)  # captions on the retrieval sheet (cliplab.eval.pictures); 0: none
        self._examples = None
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self._sizes: tuple[int, int] | None = None
        self._provenance: dict = {}
        local = self._describe()
        a_table = isinstance(self.data, str) and self.data.lower().endswith(TABLE_SUFFIXES)
        local_file = (
            a_table or hasattr(self.data, "path") or hasattr(self.data, "root")
        ) and "://" not in local
        if local_file and not Path(local).expanduser().exists():  # at start-up, not at the end of training
            raise DataError(f"retrieval data not found: {local}")

    def _loader(self, context: EvalContext):
        module = CLIPDataModule(
            val=self.data,
            batch_size=self.batch_size * context.world_size,  # global: the per-rank batch is batch_size
            num_workers=self.num_workers,
            tokenizer=context.tokenizer,
            val_transform=context.transform,
            persistent_workers=False,
        )
        try:
            module.setup("validate")
        except (FileNotFoundError, KeyError) as err:  # the sources' own one-line messages
            raise DataError(f"retrieval data: {err.args[0] if err.args else err}") from None
        return module, module.val_dataloader()

    @torch.no_grad()
    def run(self, model, context: EvalContext) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            module, loader = self._loader(context)
            transform = context.transform
            accumulator = RetrievalAccumulator(
                self.ks, examples=self.n_examples, mean=getattr(transform, "mean", CLIP_MEAN),
                std=getattr(transform, "std", CLIP_STD),
            )  # fmt: skip
            lockstep = Lockstep(model, batch_count(loader), lambda: accumulator.idle_forward(model))
            for batch in loader:
                if batch is None:
                    lockstep.skipped()
                else:
                    accumulator.update(model, batch[0], batch[1])
            lockstep.finish()
            local = torch.tensor([accumulator.n_images, sum(len(t) for t in accumulator.text_feats)])
            if context.world_size > 1:
                import torch.distributed as dist

                local = local.to(next(model.parameters()).device)
                dist.all_reduce(local)
            images, captions = (int(n) for n in local)
            if images == 0:  # on every rank alike, after the collective
                raise DataError(f"retrieval data {self._describe()}: no readable image-caption pairs")
            metrics = accumulator.compute(decode=getattr(context.tokenizer, "decode", None))
            self._examples = accumulator.examples
        finally:
            model.train(was_training)
        self._sizes = (images, captions)
        self._provenance = {
            "skipped": module.fault_summary(),
            "preprocessing": transform_description(context.transform),
            "tokenizer": type(context.tokenizer).__name__,
        }
        return metrics

    def picture_data(self) -> dict:
        """The last run's rankings of a few captions (cliplab.eval.pictures: the retrieval sheet)."""
        return {} if self._examples is None else {"retrieval": self._examples}

    def _describe(self) -> str:
        for attribute in ("path", "root", "urls"):
            if hasattr(self.data, attribute):
                return str(getattr(self.data, attribute))
        return str(self.data)

    def _data_version(self, images, captions) -> str:
        path = getattr(self.data, "path", self.data if isinstance(self.data, str) else None)
        if isinstance(path, str) and Path(path).is_file():
            return file_sha256(path)[:16]  # a table: its bytes
        return digest([type(self.data).__name__, self._describe(), images, captions])

    def chance_levels(self) -> dict[str, float]:
        """Recall@k of a random ranking: k / captions (image to text), k / images (text to image)."""
        if self._sizes is None:
            return {}
        images, captions = self._sizes
        levels = {}
        for k in self.ks:
            levels[f"image_to_text_R@{k}"] = min(1.0, k / captions)
            levels[f"text_to_image_R@{k}"] = min(1.0, k / images)
        return levels

    def provenance(self) -> dict:
        images, captions = self._sizes or (None, None)
        return {
            "evaluator": "image-text retrieval",
            "data": self._describe(),
            "data_version": self._data_version(images, captions),
            "images": images,
            "captions": captions,
            **self._provenance,
        }
