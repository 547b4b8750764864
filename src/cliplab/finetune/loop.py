"""The fine-tuning steps (plain PyTorch: one model, one device) and the classifier's accuracy."""

import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cliplab.eval.benchmarks import collate_skipping

log = logging.getLogger(__name__)


def _batches(loader: DataLoader) -> Iterator:
    """Readable batches, epoch after epoch (the loader reshuffles each pass)."""
    while True:
        for images, labels, _ in loader:
            if images is not None:
                yield images, labels


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor: linear warm-up, then cosine decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_classifier(
    classifier: nn.Module,
    dataset,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.1,
    warmup_steps: int = 0,
    num_workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    log_every: int = 50,
) -> list[float]:
    """`steps` AdamW steps of cross-entropy on `dataset` (`(image, label)` items); returns the losses.

    Weight decay applies to matrices only (not gains, biases, the head's bias), as in CLIP training.
    """
    classifier.to(device).train()
    params = [p for p in classifier.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, steps, warmup_steps)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )
    device_type = torch.device(device).type
    losses = []
    for step, (images, labels) in zip(range(steps), _batches(loader)):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = classifier(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            log.info("fine-tuning step %d/%d: loss %.4f", step + 1, steps, losses[-1])
    classifier.eval()
    return losses


@torch.no_grad()
def accuracy(
    classifier: nn.Module, dataset, batch_size: int = 256, num_workers: int = 0, device="cpu"
) -> dict:
    """Top-1 accuracy of the classifier's argmax (`top1`) and the number of images scored."""
    was_training = classifier.training
    classifier.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping)
    correct = seen = 0
    for images, labels, _ in loader:
        if images is None:
            continue
        logits = classifier(images.to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels).sum())
        seen += len(labels)
    classifier.train(was_training)
    return {"top1": correct / max(seen, 1), "n_images": seen}
