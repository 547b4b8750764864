"""The attention kernel choice: the explicit path computes what PyTorch's fused kernel computes, values and
gradients, and each tower takes the path the rule picks for its device and sequence length."""

import pytest
import torch
import torch.nn.functional as F

from cliplab.models import attention as attention_mod
from cliplab.models.attention import CPU_EXPLICIT_MAX_TOKENS, attention, explicit_attention_pays


def _heads(length: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, length, 16, generator=gen).to(dtype).requires_grad_() for _ in range(3)]


def _masks(length: int) -> dict:
    keep = torch.rand(length, length, generator=torch.Generator().manual_seed(1)) > 0.3
    keep |= torch.eye(length, dtype=torch.bool)  # every query sees at least itself
    return {
        "none": {},
        "causal": {"is_causal": True},
        "bool mask": {"attn_mask": keep},
        "additive mask": {"attn_mask": torch.randn(length, length)},
    }


@pytest.mark.parametrize("case", ["none", "causal", "bool mask", "additive mask"])
def test_explicit_path_matches_the_fused_kernel_values_and_gradients(case):
    length = 9
    assert explicit_attention_pays(torch.empty(1, length, 4))
    kwargs = _masks(length)[case]
    q, k, v = _heads(length)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ours = attention(q, k, v, **kwargs)
    reference = F.scaled_dot_product_attention(q2, k2, v2, **kwargs)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    reference.backward(grad)
    for a, b in zip((q, k, v), (q2, k2, v2), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_explicit_path_under_bf16_autocast_stays_close_to_fp32():
    q, k, v = _heads(32)
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), exact, rtol=0, atol=5e-2)


def test_long_sequences_and_other_devices_take_the_fused_kernel(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        attention_mod.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    attention(*_heads(CPU_EXPLICIT_MAX_TOKENS))
    assert not calls
    attention(*_heads(CPU_EXPLICIT_MAX_TOKENS + 1))
    assert calls == [1]
    half = attention_mod.CPU_EXPLICIT_MAX_TOKENS_HALF
    assert explicit_attention_pays(torch.empty(1, half, 4, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # timm's blocks see fp32 inputs under autocast
        assert explicit_attention_pays(torch.empty(1, half, 4))
    assert not explicit_attention_pays(torch.empty(1, half + 1, 4, dtype=torch.bfloat16))
    assert not explicit_attention_pays(torch.empty(1, 8, 4, device="meta"))


def test_timm_vit_tower_takes_the_explicit_path_on_the_cpu_with_the_same_output(monkeypatch):
    from timm.layers import Attention

    from cliplab.models.image_tower import TimmImageTower

    torch.manual_seed(0)
    tower = TimmImageTower(
        "vit_base_patch16_clip_224", embed_dim=32, image_size=32, width=64, depth=2, num_heads=2, pool="token"
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    explicit = tower(images)
    blocks = [m for m in tower.modules() if isinstance(m, Attention)]
    assert len(blocks) == 2 and not any(m.fused_attn for m in blocks)

    monkeypatch.setattr(attention_mod, "CPU_EXPLICIT_MAX_TOKENS", 0)
    monkeypatch.setattr(attention_mod, "CPU_EXPLICIT_MAX_TOKENS_HALF", 0)
    fused = tower(images)
    assert all(m.fused_attn for m in blocks)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
