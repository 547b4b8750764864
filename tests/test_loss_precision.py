"""Under bf16 autocast the contrastive losses compute their logits in fp32.

Early in training the towers' features are nearly parallel: the logits differ in the third significant
digit, which bf16 cannot hold, so a bf16 loss gives gradients of mostly rounding noise (and training
sits at ln(batch)). Inputs may be bf16; everything after them must be as exact as fp32.
"""

import pytest
import torch
import torch.nn.functional as F

from cliplab.losses import ClipLoss, SigLipLoss


def nearly_parallel(n: int, dim: int, spread: float, seed: int) -> torch.Tensor:
    """Unit vectors with pairwise cosine close to 1, like a freshly initialised tower's output."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, dim, generator=g)
    return F.normalize(common + spread * torch.randn(n, dim, generator=g), dim=-1)


def feature_grad(loss_fn, images, texts, bias, autocast: bool) -> torch.Tensor:
    images = images.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(images, texts, torch.tensor(100.0), bias)
    loss.backward()  # outside autocast, as Lightning does
    return images.grad.float()


@pytest.mark.parametrize("loss_fn, bias", [(ClipLoss(), None), (SigLipLoss(), torch.tensor(-10.0))])
def test_gradients_under_bf16_autocast_are_fp32_exact(loss_fn, bias):
    # fp32 tensors holding bf16-representable values: autocast's own input rounding changes nothing
    images = nearly_parallel(64, 256, 0.05, 0).bfloat16().float()
    texts = F.normalize(nearly_parallel(64, 256, 0.05, 1) + 0.05 * images, dim=-1).bfloat16().float()
    reference = feature_grad(loss_fn, images.double(), texts.double(), bias, autocast=False)
    mixed = feature_grad(loss_fn, images, texts, bias, autocast=True)
    assert torch.allclose(mixed, reference.float(), rtol=1e-3, atol=1e-6 * reference.abs().max().item())
