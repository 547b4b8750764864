"""Linear-probe and k-shot evaluators on an ImageFolder: features extracted once, logistic regression.

The math is cliplab.eval.linear_probe (C swept over a log grid on a held-out split of the training
features, refit with the best C); here: which images train and test, extraction over ranks, and the fit on
rank 0 with its metrics sent to every rank (scikit-learn runs once, every rank logs the same numbers).
"""

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cliplab.eval.benchmarks import BenchmarkError, ImageFolderBenchmark
from cliplab.eval.evaluator import EvalContext
from cliplab.eval.features import extract_features
from cliplab.eval.linear_probe import linear_probe
from cliplab.eval.pictures.data import KShotCurve
from cliplab.eval.provenance import digest, transform_description
from cliplab.eval.zeroshot import build_zeroshot_classifier


def c_values(low: float = -6, high: float = 6, steps: int = 13) -> list[float]:
    """The inverse regularisation strengths C = 10^low .. 10^high, log-spaced."""
    return [float(c) for c in np.logspace(low, high, int(steps))]


def split_per_class(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions: a seeded `fraction` of every class (at least one image) is test."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            raise BenchmarkError(f"class {int(c)} has {len(members)} image: a probe needs 2+ per class")
        test += list(members[: max(1, int(round(fraction * len(members))))])
    test = np.sort(np.asarray(test, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _on_rank0_then_share(fn):
    """`fn()` on rank 0 only; its (picklable) result on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    box = [fn() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _FolderProbe:
    """Shared by both probes: the folder's images, their features once per run, the train/test split."""

    def __init__(self, root, test_fraction: float = 0.3, val_fraction: float = 0.2, c_grid=None,
                 seed: int = 0, limit: int | None = None, batch_size: int = 256, num_workers: int = 0):  # fmt: skip
        self.root = Path(root) if root else None
        if self.root is None or not self.root.is_dir():  # at start-up, not after the first epoch
            raise BenchmarkError(f"probe image folder not found: {root}")
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        self.seed = int(seed)
        self.cs = c_values(**(c_grid or {}))
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        split = self.root is not None and (self.root / "train").is_dir() and (self.root / "test").is_dir()
        folders = {"train": self.root / "train", "test": self.root / "test"} if split else {"all": self.root}
        self.sets = {
            name: ImageFolderBenchmark(f"probe:{name}", folder, templates=["{}"], limit=limit)
            for name, folder in folders.items()
        }
        self._transform = None
        self._info: dict = {}

    @property
    def classes(self) -> int:
        return len(next(iter(self.sets.values())).classnames)

    def features(self, model, context: EvalContext) -> dict[str, np.ndarray]:
        """x_train, y_train, x_test, y_test (numpy) of the folder's readable images."""
        was_training = model.training
        model.eval()
        try:
            got = {}
            for name, images in self.sets.items():
                indices, feats, labels = extract_features(
                    model, images.dataset(context.transform), context.rank, context.world_size,
                    self.batch_size, self.num_workers,
                )  # fmt: skip
                got[name] = (feats.numpy(), labels.numpy(), len(images.samples) - len(indices))
        finally:
            model.train(was_training)
        if "all" in got:
            x, y, skipped = got["all"]
            train, test = split_per_class(y, self.test_fraction, self.seed)
            got = {"train": (x[train], y[train], skipped), "test": (x[test], y[test], 0)}
        self._transform = context.transform
        self._info = {"train_images": len(got["train"][1]), "test_images": len(got["test"][1]),
                      "n_skipped": got["train"][2] + got["test"][2]}  # fmt: skip
        return {"x_train": got["train"][0], "y_train": got["train"][1],
                "x_test": got["test"][0], "y_test": got["test"][1]}  # fmt: skip

    def _fit(self, data: dict, **kwargs) -> dict[str, float]:
        try:
            return linear_probe(
                data["x_train"], data["y_train"], test_features=data["x_test"], test_labels=data["y_test"],
                cs=self.cs, val_fraction=self.val_fraction, **kwargs,
            )  # fmt: skip
        except ValueError as err:
            raise BenchmarkError(f"probe on {self.root}: {err}") from None

    def provenance(self) -> dict:
        items = []
        for name, images in self.sets.items():
            base = str(images.root)
            items += [[name, str(s).removeprefix(base), int(label)] for s, label in images.samples]
        return {
            "data": str(self.root),
            "data_version": digest(items),
            "split": "train/ and test/ folders" if "train" in self.sets else
                     f"{self.test_fraction} of each class is test (seed {self.seed})",
            "C_grid": self.cs,
            "val_fraction": self.val_fraction,
            "preprocessing": transform_description(self._transform) if self._transform else None,
            **self._info,
        }  # fmt: skip


class LinearProbe(_FolderProbe):
    """Test top-1 and mean per-class recall of a logistic regression on frozen image features."""

    def run(self, model, context: EvalContext) -> dict[str, float]:
        data = self.features(model, context)
        result = _on_rank0_then_share(lambda: self._fit(data, seed=self.seed))
        self._info["best_C"] = result["best_C"]
        return {"top1": result["test_top1"], "mean_recall": result["test_mean_recall"]}

    def chance_levels(self) -> dict[str, float]:
        return {"top1": 1 / self.classes, "mean_recall": 1 / self.classes}

    def provenance(self) -> dict:
        return {"evaluator": "linear probe", **super().provenance()}


class KShotProbe(_FolderProbe):
    """Test top-1 with k training images per class, for each k in `shots`, mean and std over `seeds`
    draws (each draw also holds out its own k per class of validation images to choose C).

    With `zero_shot_templates` (default one CLIP prompt; null: off) it also logs `zeroshot_top1`: the
    zero-shot classifier of the folder's class names on the same test images, the line the k-shot curve is
    read against (the CLIP paper's Figure 6: how many shots match zero-shot)."""

    def __init__(self, root, shots=(1, 2, 4, 8, 16), seeds: int = 3, val_fraction: float = 0.5,
                 zero_shot_templates=("a photo of a {}.",), **kwargs):  # fmt: skip
        super().__init__(root, val_fraction=val_fraction, **kwargs)
        self.shots, self.seeds = tuple(int(k) for k in shots), int(seeds)
        self.templates = list(zero_shot_templates or [])
        self._last: dict[str, float] | None = None

    def _zero_shot(self, model, context: EvalContext, data: dict) -> float:
        """Top-1 of the zero-shot classifier on the test features (every rank: the text tower may be sharded)."""
        classnames = next(iter(self.sets.values())).classnames
        was_training = model.training
        model.eval()
        try:
            classifier = build_zeroshot_classifier(model, context.tokenizer, classnames, self.templates)
        finally:
            model.train(was_training)
        logits = torch.from_numpy(data["x_test"]).float() @ classifier.cpu().float()
        return float((logits.argmax(dim=1).numpy() == data["y_test"]).mean())

    def _all_shots(self, data: dict) -> dict[str, float]:
        metrics = {}
        for k in self.shots:
            top1 = [self._fit(data, k_shot=k, seed=self.seed + s)["test_top1"] for s in range(self.seeds)]
            metrics[f"{k}shot_top1_mean"] = float(np.mean(top1))
            metrics[f"{k}shot_top1_std"] = float(np.std(top1))
        return metrics

    def run(self, model, context: EvalContext) -> dict[str, float]:
        data = self.features(model, context)
        self._last = _on_rank0_then_share(lambda: self._all_shots(data))
        if self.templates:
            self._last["zeroshot_top1"] = self._zero_shot(model, context, data)
        return self._last

    def picture_data(self) -> dict:
        """The last run's curve (cliplab.eval.pictures: zero-shot vs k-shot)."""
        if self._last is None:
            return {}
        return {"kshot": KShotCurve.from_metrics(self._last, next(iter(self.sets.values())).classnames)}

    def chance_levels(self) -> dict[str, float]:
        levels = {f"{k}shot_top1_mean": 1 / self.classes for k in self.shots}
        return levels | ({"zeroshot_top1": 1 / self.classes} if self.templates else {})

    def provenance(self) -> dict:
        return {"evaluator": "k-shot linear probe", "shots": list(self.shots), "seeds": self.seeds,
                "zero_shot_templates": self.templates, **super().provenance()}  # fmt: skip
