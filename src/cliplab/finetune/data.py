"""The fine-tuning task's labelled splits, from the zero-shot benchmark classes (`cliplab.eval.benchmarks`).

`train` is any benchmark config (an `ImageFolderBenchmark` root, Fashion-MNIST's train split, ...); the
test split is another benchmark (`test`), or else a seeded `holdout` share of the training images. The
class names and prompt templates of `train` build the zero-shot head.
"""

import torch

from cliplab.eval.benchmarks import LabelledImages, ZeroShotBenchmark
from cliplab.utils.errors import ConfigError


class TaskSplits:
    def __init__(
        self,
        train: ZeroShotBenchmark,
        test: ZeroShotBenchmark | None = None,
        holdout: float = 0.2,
        seed: int = 0,
    ):
        if test is None and not 0.0 < holdout < 1.0:
            raise ConfigError(
                f"finetune.holdout={holdout} must be in (0, 1) when no finetune.test split is given"
            )
        self.train_benchmark, self.test_benchmark = train, test
        self.holdout, self.seed = holdout, seed

    @property
    def classnames(self) -> list[str]:
        return self.train_benchmark.classnames

    @property
    def templates(self) -> list[str]:
        return self.train_benchmark.templates

    def _items(self) -> tuple[list, list]:
        items = list(self.train_benchmark.samples)
        if self.test_benchmark is not None:
            if len(self.test_benchmark.classnames) != len(self.classnames):
                raise ConfigError(
                    f"finetune.test has {len(self.test_benchmark.classnames)} classes but finetune.data has "
                    f"{len(self.classnames)}: they must be the same classes"
                )
            return items, list(self.test_benchmark.samples)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_test = max(1, round(len(items) * self.holdout))
        if n_test >= len(items):
            raise ConfigError(
                f"finetune.data has {len(items)} images: too few to hold out {self.holdout:.0%}"
            )
        return [items[i] for i in order[n_test:]], [items[i] for i in order[:n_test]]

    def datasets(self, train_transform, test_transform) -> tuple[LabelledImages, LabelledImages]:
        train_items, test_items = self._items()
        test_loader = (self.test_benchmark or self.train_benchmark).load_image
        return (
            LabelledImages(train_items, self.train_benchmark.load_image, train_transform),
            LabelledImages(test_items, test_loader, test_transform),
        )
