"""What the evaluators keep for the pictures, so nothing is recomputed to draw them."""

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PerClassAccuracy:
    """Zero-shot top-1 recall of every class (`accuracy[c]` over `support[c]` images)."""

    classnames: list[str]
    accuracy: list[float]  # nan for a class without images
    support: list[int]

    @property
    def top1(self) -> float:
        """The overall top-1 these per-class numbers add up to."""
        hits = sum(a * n for a, n in zip(self.accuracy, self.support) if n)
        return hits / max(1, sum(self.support))


@dataclass
class RetrievalExamples:
    """Text-to-image rankings of a few query captions: `ranked[q]` are the gallery indices of the top-k
    images for caption `captions[q]`, `correct[q]` the index of its own image; `thumbnails` holds an
    HxWx3 uint8 picture of every gallery image that appears in a ranking."""

    captions: list[str]
    ranked: list[list[int]]
    correct: list[int]
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)
    gallery: int = 0  # images searched

    def cells(self) -> list[list[tuple[int, bool]]]:
        """Per query, its ranked images as (gallery index, is the caption's own image): the sheet's grid."""
        return [[(i, i == right) for i in top] for top, right in zip(self.ranked, self.correct)]

    def rank_of_correct(self) -> list[int | None]:
        """Per query, the 1-based rank of its own image among those shown (None: not in the top k)."""
        return [next((r + 1 for r, (_, hit) in enumerate(row) if hit), None) for row in self.cells()]


@dataclass
class KShotCurve:
    """Top-1 of linear probes trained on k images per class: mean and std over seeds, per k; `zero_shot`:
    the zero-shot top-1 on the same test images when the probe measured it."""

    shots: list[int]
    mean: list[float]
    std: list[float]
    classnames: list[str]
    zero_shot: float | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], classnames: list[str]) -> "KShotCurve":
        """From KShotProbe's `<k>shot_top1_mean` / `<k>shot_top1_std` (and `zeroshot_top1`) metrics."""
        shots = sorted(int(k.removesuffix("shot_top1_mean")) for k in metrics if k.endswith("shot_top1_mean"))
        return cls(
            shots,
            [float(metrics[f"{k}shot_top1_mean"]) for k in shots],
            [float(metrics.get(f"{k}shot_top1_std", 0.0)) for k in shots],
            list(classnames),
            None if metrics.get("zeroshot_top1") is None else float(metrics["zeroshot_top1"]),
        )


def shots_matching(curve: KShotCurve, zero_shot: float) -> float | None:
    """How many shots per class a linear probe needs to match `zero_shot` top-1 (the CLIP paper's Figure 6
    reading): where the mean curve first crosses it, interpolated linearly in log2(k). None when the curve
    never reaches it; the smallest k when the probe already matches it there (it may take fewer)."""
    points = list(zip(curve.shots, curve.mean))
    if not points:
        return None
    if points[0][1] >= zero_shot:
        return float(points[0][0])
    for (k0, a0), (k1, a1) in zip(points, points[1:]):
        if a0 < zero_shot <= a1:
            t = (zero_shot - a0) / (a1 - a0)
            return float(2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0))))
    return None


@dataclass
class LossCurves:
    """The run's losses against samples seen: `train` at each logging step, `val` at each validation."""

    train: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)

    def rows(self) -> list[list]:
        """[samples seen, split, loss], training first: the same numbers as a table."""
        return [[n, "train", v] for n, v in self.train] + [[n, "val", v] for n, v in self.val]
