"""Zero-shot classification: a classifier built from class names x prompt templates, and its accuracy.

The classifier for class c is the mean of the L2-normalised text embeddings of c's prompts, re-normalised: a
matrix `[E, C]` that image features multiply. c's prompts are every template filled with c's name or, where
the templates are a mapping, the prompts the mapping gives c itself (CLIP_benchmark's class-specific prompts,
as CuPL's descriptions are used).
"""

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

Template = str | Callable[[str], str]
# Templates shared by every class, or each class's own prompts (class name -> finished prompts).
Templates = Sequence[Template] | Mapping[str, Sequence[str]]


def class_prompts(classnames: Sequence[str], templates: Templates) -> list[list[str]]:
    """Each class's prompts, in class order: every template filled with the class name, or with a mapping,
    the prompts it holds for that class."""
    if not classnames:
        raise ValueError("zero-shot classifier needs at least one class name")
    if isinstance(templates, Mapping):
        missing = [name for name in classnames if not templates.get(name)]
        if missing:
            raise ValueError(
                f"class-specific prompts have none for {len(missing)} classes, e.g. {missing[0]!r}"
            )
        return [[str(p) for p in templates[name]] for name in classnames]
    if not templates:
        raise ValueError("zero-shot classifier needs at least one prompt template")
    fill = [t.format if isinstance(t, str) else t for t in templates]
    return [[f(name) for f in fill] for name in classnames]


def fill_templates(classnames: Sequence[str], templates: Templates) -> list[str]:
    """All prompts, class-major: the prompts of class 0, then class 1, ..."""
    return [prompt for prompts in class_prompts(classnames, templates) for prompt in prompts]


def _text_tower(model: nn.Module) -> nn.Module:
    return getattr(model, "text", model)


def _trimmable(model: nn.Module) -> bool:
    """Trailing padding may be dropped only when the text tower says it is causal and pools at end-of-text:
    then no kept position ever attends to a dropped one, so the pooled feature is unchanged."""
    return bool(getattr(_text_tower(model), "causal", False))


def _used_lengths(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per row: index of the last non-padding token + 1 (at least 1)."""
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return (positions * (tokens != pad_id)).amax(dim=1).clamp(min=1)


@torch.no_grad()
def encode_prompts(
    model: nn.Module,
    tokens: torch.Tensor,
    batch_size: int = 1024,
    pad_id: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised text features `[N, E]` of tokenised prompts, in their original order.

    With a causal text tower the prompts are sorted by length and each batch is cut to its own longest
    prompt (CLIP prompts fill ~10 of 77 positions), which is exact; otherwise batches run at full length.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if _trimmable(model):
        lengths = _used_lengths(tokens, pad_id)
        order = torch.argsort(lengths, stable=True)
    else:
        lengths = torch.full((tokens.shape[0],), tokens.shape[1])
        order = torch.arange(tokens.shape[0])
    features = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        chunk = tokens[idx, :width].to(device, non_blocking=True)
        out = F.normalize(model.encode_text(chunk).float(), dim=-1)
        if features is None:
            features = torch.empty(tokens.shape[0], out.shape[1], device=out.device)
        features[idx.to(out.device)] = out
    return features


@torch.no_grad()
def build_zeroshot_classifier(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Templates,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Zero-shot classifier weights `[E, C]` (columns L2-normalised).

    `model` has `encode_text(tokens)`; its text tower (`model.text`) may declare `causal = True` to allow the
    exact padding trim. Prompts of all classes are encoded together in `batch_size` chunks.
    """
    prompts = class_prompts(classnames, templates)
    tokens = tokenizer([prompt for own in prompts for prompt in own])
    pad_id = getattr(tokenizer, "pad_token_id", 0)
    features = encode_prompts(model, tokens, batch_size, 0 if pad_id is None else pad_id, device)
    per_class = torch.stack([own.mean(dim=0) for own in features.split([len(p) for p in prompts])])
    return F.normalize(per_class, dim=-1).T.contiguous()


def templates_key(templates: Templates) -> tuple:
    """A hashable stand-in for `templates` (callables by identity)."""
    if isinstance(templates, Mapping):
        return tuple((name, tuple(prompts)) for name, prompts in templates.items())
    return tuple(t if isinstance(t, str) else id(t) for t in templates)


class ClassifierCache:
    """Reuses a zero-shot classifier while the text tower is frozen and untouched.

    The key holds every text parameter's version counter (bumped by any in-place update: optimizer steps,
    `load_state_dict`), its identity, device and dtype, so a stale classifier is never returned. A text tower
    with trainable parameters is never cached: it changes every step.
    """

    def __init__(self):
        self._store: dict = {}

    @staticmethod
    def _key(model, classnames, templates, device):
        params = list(_text_tower(model).parameters())
        if not params or any(p.requires_grad for p in params):
            return None
        state = tuple((id(p), p._version, p.device, p.dtype) for p in params)
        prompts = (tuple(classnames), templates_key(templates))
        return (id(model), state, prompts, str(device))

    def get(self, model, tokenizer, classnames, templates, batch_size=1024, device=None) -> torch.Tensor:
        key = self._key(model, classnames, templates, device)
        if key is not None and key in self._store:
            return self._store[key]
        classifier = build_zeroshot_classifier(model, tokenizer, classnames, templates, batch_size, device)
        if key is not None:
            self._store = {key: classifier}  # one entry per benchmark cache: old weights are useless
        return classifier


class ZeroShotAccumulator(nn.Module):
    """Streams `(image_features, labels)` batches and reports top-1, top-5 and mean per-class recall.

    Built on torchmetrics, so `compute()` sums the counts of every rank when torch.distributed is running
    (each rank may see a different number of images). Mean recall averages over classes that occur in the
    labels (as scikit-learn's balanced accuracy does), not over classes that never appear.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.per_class = MulticlassStatScores(num_classes, top_k=1, average="none")

    def update(self, image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor) -> None:
        logits = F.normalize(image_features.float(), dim=-1) @ classifier.to(image_features.device).float()
        labels = labels.to(logits.device)
        for metric in (self.top1, self.top5, self.per_class):
            metric.to(logits.device).update(logits, labels)

    def compute(self) -> dict[str, float]:
        stats = self.per_class.compute()  # [C, 5]: tp, fp, tn, fn, support
        tp, support = stats[:, 0].double(), stats[:, 4].double()
        present = support > 0
        mean_recall = (tp[present] / support[present]).mean() if present.any() else torch.tensor(float("nan"))
        return {
            "top1": float(self.top1.compute()),
            "top5": float(self.top5.compute()),
            "mean_recall": float(mean_recall),
        }

    def per_class_recall(self) -> tuple[list[float], list[int]]:
        """(top-1 recall of every class, nan without images; images of every class), summed over ranks."""
        stats = self.per_class.compute()
        tp, support = stats[:, 0].double(), stats[:, 4].double()
        recall = torch.where(support > 0, tp / support.clamp(min=1), torch.full_like(tp, float("nan")))
        return recall.tolist(), [int(n) for n in support.tolist()]

    def reset(self) -> None:
        for metric in (self.top1, self.top5, self.per_class):
            metric.reset()


def zeroshot_metrics(
    image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """top1, top5 and mean per-class recall of zero-shot predictions (features need not be normalised)."""
    if image_features.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_features.shape[0]} image features but {labels.shape[0]} labels")
    acc = ZeroShotAccumulator(classifier.shape[1])
    acc.update(image_features, classifier, labels)
    return acc.compute()
