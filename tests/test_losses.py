"""Single-process losses against open_clip's (the oracle) and against each other."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss
from torch import nn

from cliplab.losses import ChunkedClipLoss, ClipLoss, SigLipLoss
from cliplab.losses.grad_cache import grad_cache_backward
from cliplab.models.clip import CLIP


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
    # n=1: the loss is 0, the difference of two logsumexps near the logit (30): a few of their ulps apart
    # depending on the CPU's vectorised exp (AVX-512 gave one float32 ulp at 30, 1.9e-6).
    atol = 8 * torch.finfo(dtype).eps * float(scale)
    torch.testing.assert_close(ours, ref, rtol=loss_tol, atol=max(loss_tol, atol))
    for a, b in zip(our_grads, ref_grads):
        # floor 1: with n=1 the exact gradient is 0, a sum of O(1) terms that cancel up to rounding
        torch.testing.assert_close(a, b, rtol=grad_tol, atol=grad_tol * max(b.abs().max().item(), 1.0))


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


class _ImageTower(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.output_dim = 8
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 8)
        )

    def forward(self, images):
        return self.net(images)


class _TextTower(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.output_dim = 8
        self.embed = nn.Embedding(20, 16)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(16, 8)

    def forward(self, tokens):
        return self.proj(self.drop(self.embed(tokens).mean(dim=1)))


def _tiny_clip(dropout: float = 0.0, bias: float | None = None, scale: float = math.log(10)) -> CLIP:
    torch.manual_seed(0)
    model = CLIP(_ImageTower(dropout), _TextTower(dropout), 8, init_logit_scale=scale, init_logit_bias=bias)
    return model.double()


def _clip_batch(n: int = 10):
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 20, (n, 5), generator=g
    )


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("loss_fn", "bias"), [(ClipLoss(), None), (SigLipLoss(), -5.0), (ChunkedClipLoss(3), None)]
)
@pytest.mark.parametrize("chunk_size", [1, 3, 10])
# 4.8 > ln(100): the temperature is clamped to 100 (no gradient to it) like the model's forward clamps it
@pytest.mark.parametrize("scale", [math.log(10), 4.8])
def test_grad_cache_equals_big_batch(loss_fn, bias, chunk_size, scale):
    images, tokens = _clip_batch()
    big = _tiny_clip(bias=bias, scale=scale)
    out = big(images, tokens)
    expected_loss = loss_fn(
        out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"]
    )
    expected_loss.backward()

    cached = _tiny_clip(bias=bias, scale=scale)
    loss = grad_cache_backward(cached, images, tokens, loss_fn, chunk_size)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-10, atol=0)
    expected = _grads(big)
    for name, grad in _grads(cached).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-8, atol=1e-12, msg=name)


def test_grad_cache_replays_dropout_masks():
    # reference: the same chunks embedded once with autograd from the same RNG state
    images, tokens = _clip_batch()
    reference = _tiny_clip(dropout=0.5)
    # the cache pass embeds image then text per chunk: mirror that order
    torch.manual_seed(123)
    pairs = [
        (reference.encode_image(i, normalize=True), reference.encode_text(t, normalize=True))
        for i, t in zip(images.split(4), tokens.split(4))
    ]
    image_features = torch.cat([p[0] for p in pairs])
    text_features = torch.cat([p[1] for p in pairs])
    expected_loss = ClipLoss()(image_features, text_features, reference.logit_scale.exp())
    expected_loss.backward()

    cached = _tiny_clip(dropout=0.5)
    torch.manual_seed(123)
    loss = grad_cache_backward(cached, images, tokens, ClipLoss(), 4)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-10, atol=0)
    expected = _grads(reference)
    for name, grad in _grads(cached).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-8, atol=1e-12, msg=name)


def test_chunked_clip_loss_ignores_autocast():
    image, text = _features(24, 16, seed=6, dtype=torch.float32)
    scale = torch.tensor(50.0)
    expected, expected_grads = _value_and_grads(ChunkedClipLoss(5), image, text, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, our_grads = _value_and_grads(ChunkedClipLoss(5), image, text, scale)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    for a, b in zip(our_grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
