"""Contrastive losses: `loss(image_features, text_features, logit_scale, logit_bias=None) -> scalar`."""

from cliplab.losses.chunked_clip_loss import ChunkedClipLoss
from cliplab.losses.clip_loss import ClipLoss
from cliplab.losses.grad_cache import grad_cache_backward
from cliplab.losses.siglip_loss import SigLipLoss

__all__ = ["ChunkedClipLoss", "ClipLoss", "SigLipLoss", "grad_cache_backward"]
