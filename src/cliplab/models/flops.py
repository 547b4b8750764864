"""Model FLOPs of a training step, counted once on the meta device (no memory, no compute); the model
owns its FLOPs estimate (nanoGPT), the training module and the benchmarks read the same count."""

import torch
from lightning_fabric.utilities.throughput import measure_flops

from cliplab.models.build import build_clip


def train_flops_per_sample(model_cfg: dict, text_length: int | None = None) -> int:
    """Forward + backward FLOPs of one image-text pair through both towers (matmuls and convolutions),
    with `text_length` tokens (default: the full context; batches trimmed to their longest caption are
    shorter)."""
    return model_flops_per_sample(model_cfg, text_length, backward=True)


def model_flops_per_sample(model_cfg: dict, text_length: int | None = None, backward: bool = True) -> int:
    """FLOPs of one image-text pair, forward and (`backward=True`) backward: training, or evaluation."""
    with torch.device("meta"):
        model = build_clip(model_cfg)
        size, length = model_cfg["image_size"], text_length or model_cfg["context_length"]
        images = torch.empty(1, 3, size, size)
        tokens = torch.zeros(1, length, dtype=torch.long)
    return measure_flops(
        model,
        lambda: model(images, tokens),
        (lambda out: out["image_features"].sum() + out["text_features"].sum()) if backward else None,
    )
