"""Single-process losses against open_clip's (the oracle) and against each other."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss

from cliplab.losses import ChunkedClipLoss, ClipLoss, SigLipLoss


def _features(n: int, dim: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype) + image, dim=-1)
    return image, text


def _value_and_grads(loss_fn, image, text, scale, bias=None):
    leaves = [t.clone().requires_grad_() for t in (image, text, scale)]
    if bias is not None:
        leaves.append(bias.clone().requires_grad_())
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), grads


@pytest.mark.parametrize("n", [1, 7, 64])
def test_clip_loss_matches_open_clip(n):
    image, text = _features(n, 16)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ours, our_grads = _value_and_grads(ClipLoss(), image, text, scale)
    ref, ref_grads = _value_and_grads(OpenClipLoss(), image, text, scale)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_clip_loss_ignores_bias():
    image, text = _features(8, 16)
    scale = torch.tensor(10.0, dtype=torch.float64)
    with_bias = ClipLoss()(image, text, scale, torch.tensor(-3.0, dtype=torch.float64))
    torch.testing.assert_close(with_bias, ClipLoss()(image, text, scale))


def test_clip_loss_of_perfect_pairs_is_small():
    image, _ = _features(16, 64)
    assert ClipLoss()(image, image, torch.tensor(100.0, dtype=torch.float64)) < 1e-3


@pytest.mark.parametrize("n", [1, 5, 64])
def test_siglip_loss_matches_open_clip(n):
    image, text = _features(n, 16, seed=1)
    scale = torch.tensor(10.0, dtype=torch.float64)
    bias = torch.tensor(-10.0, dtype=torch.float64)
    ours, our_grads = _value_and_grads(SigLipLoss(), image, text, scale, bias)
    ref, ref_grads = _value_and_grads(OpenSigLipLoss(), image, text, scale, bias)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_siglip_loss_matches_formula():
    image, text = _features(6, 8, seed=2)
    t, b = 10.0, -10.0
    logits = t * image @ text.T + b
    z = 2 * torch.eye(6, dtype=torch.float64) - 1
    expected = -torch.log(torch.sigmoid(z * logits)).sum() / 6
    torch.testing.assert_close(SigLipLoss()(image, text, torch.tensor(t), torch.tensor(b)), expected)


def test_siglip_requires_bias():
    image, text = _features(4, 8)
    with pytest.raises(ValueError, match="init_logit_bias"):
        SigLipLoss()(image, text, torch.tensor(math.log(10)))


@pytest.mark.parametrize(("n", "block_size"), [(1, 1), (37, 8), (64, 64), (50, 1000)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_clip_loss_equals_plain(n, block_size, dtype):
    image, text = _features(n, 16, seed=3, dtype=dtype)
    scale = torch.tensor(30.0, dtype=dtype)
    ours, our_grads = _value_and_grads(ChunkedClipLoss(block_size), image, text, scale)
    ref, ref_grads = _value_and_grads(ClipLoss(), image, text, scale)
    loss_tol, grad_tol = (1e-12, 1e-10) if dtype == torch.float64 else (1e-6, 1e-5)
    torch.testing.assert_close(ours, ref, rtol=loss_tol, atol=loss_tol)  # n=1: the loss is 0
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=grad_tol, atol=grad_tol * b.abs().max().item())


def test_chunked_clip_loss_is_stable_at_large_scale():
    # logits up to +-100 (the clamp limit): log-sum-exps must not overflow or underflow in fp32
    image, text = _features(40, 8, seed=4, dtype=torch.float32)
    scale = torch.tensor(100.0)
    ours, our_grads = _value_and_grads(ChunkedClipLoss(7), image, text, scale)
    ref, ref_grads = _value_and_grads(ClipLoss(), image, text, scale)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_chunked_clip_loss_half_inputs_accumulate_in_fp32():
    image, text = _features(32, 16, seed=5, dtype=torch.float32)
    scale = torch.tensor(20.0)
    ref = ClipLoss()(image, text, scale)
    ours = ChunkedClipLoss(8)(image.bfloat16(), text.bfloat16(), scale)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=0)
