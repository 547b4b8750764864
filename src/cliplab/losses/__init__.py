"""Contrastive losses: `loss(image_features, text_features, logit_scale, logit_bias=None) -> scalar`
(the `Loss` protocol of `cliplab.losses.interface`).

Each loss class declares what it is, read by config validation (`cliplab.validate`):
`contrastive` (its value couples the samples of a batch, so plain gradient accumulation would change
the objective: use `accumulation=feature_cache`) and `needs_logit_bias` (the model needs `init_logit_bias`).
"""

from cliplab.losses.chunked_clip_loss import ChunkedClipLoss
from cliplab.losses.clip_loss import ClipLoss
from cliplab.losses.grad_cache import FeatureCache, grad_cache_backward
from cliplab.losses.interface import Loss
from cliplab.losses.siglip_loss import SigLipLoss

__all__ = ["ChunkedClipLoss", "ClipLoss", "FeatureCache", "Loss", "SigLipLoss", "grad_cache_backward"]
