"""Config wrapper that selects feature-cache (GradCache) accumulation for a contrastive loss."""

from torch import nn


class FeatureCacheLoss(nn.Module):
    """`loss` over the whole (global) batch, with towers run `chunk_size` samples at a time.

    The training module sees this wrapper and switches to `grad_cache_backward`: activation memory is
    one chunk, gradients equal one big-batch backward, and the negatives are the whole batch (unlike
    plain gradient accumulation).
    """

    def __init__(self, loss: nn.Module, chunk_size: int = 64):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.loss, self.chunk_size = loss, int(chunk_size)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        return self.loss(image_features, text_features, logit_scale, logit_bias)
