"""Zero-shot classification of a benchmark (class names x prompt templates) as an `evals` entry."""

from collections.abc import Mapping

from cliplab.eval.benchmarks import ZeroShotBenchmark
from cliplab.eval.evaluator import EvalContext
from cliplab.eval.pictures.data import PerClassAccuracy
from cliplab.eval.provenance import digest, transform_description
from cliplab.eval.run import evaluate_zeroshot
from cliplab.eval.zeroshot import ClassifierCache

LOGGED = ("top1", "top5", "mean_recall")


def _describe(templates) -> list[str] | dict[str, list[str]]:
    """The prompt templates as saved in the provenance (each class's own prompts where there are such)."""
    if isinstance(templates, Mapping):
        return {name: list(prompts) for name, prompts in templates.items()}
    return [t if isinstance(t, str) else repr(t) for t in templates]


class ZeroShotClassification:
    """top1, top5 and mean per-class recall on `benchmark` (a cliplab.eval.benchmarks object); each rank
    classifies its share of the images and the counts are summed, so every rank returns the same numbers.
    The classifier is cached while the text tower is frozen (cliplab.eval.zeroshot.ClassifierCache)."""

    def __init__(
        self,
        benchmark: ZeroShotBenchmark,
        batch_size: int = 256,
        num_workers: int = 0,
        text_batch_size: int = 1024,
    ):
        self.benchmark = benchmark
        self.batch_size, self.num_workers, self.text_batch_size = batch_size, num_workers, text_batch_size
        self._cache = ClassifierCache()
        self._counts: dict[str, int] = {}
        self._transform = None
        self._per_class: PerClassAccuracy | None = None

    def run(self, model, context: EvalContext) -> dict[str, float]:
        metrics = evaluate_zeroshot(
            model,
            context.tokenizer,
            self.benchmark,
            context.transform,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            rank=context.rank,
            world_size=context.world_size,
            cache=self._cache,
            text_batch_size=self.text_batch_size,
            per_class=True,
        )
        self._counts = {"n_images": metrics["n_images"], "n_skipped": metrics["n_skipped"]}
        self._transform = context.transform
        self._per_class = PerClassAccuracy(
            list(self.benchmark.classnames), metrics["per_class_recall"], metrics["per_class_support"]
        )
        return {key: metrics[key] for key in LOGGED}

    def picture_data(self) -> dict:
        """The last run's per-class accuracy (cliplab.eval.pictures)."""
        return {} if self._per_class is None else {"per_class": self._per_class}

    def chance_levels(self) -> dict[str, float]:
        """k / classes for top-k, 1 / classes for mean recall (guessing uniformly)."""
        classes = len(self.benchmark.classnames)
        return {"top1": 1 / classes, "top5": min(1.0, 5 / classes), "mean_recall": 1 / classes}

    def provenance(self) -> dict:
        bench = self.benchmark
        root = str(getattr(bench, "root", None) or "")
        # image paths relative to the data root: the same data gives the same version on any machine
        items = [[str(s).removeprefix(root), int(label)] for s, label in bench.samples]
        return {
            "evaluator": "zero-shot classification",
            "benchmark": repr(bench),
            "data": root or str(getattr(bench, "split", "")),
            "data_version": digest(items),
            "classes": len(bench.classnames),
            "classnames_sha": digest(bench.classnames),
            "templates": _describe(bench.templates),
            "preprocessing": transform_description(self._transform) if self._transform else None,
            **self._counts,
        }
