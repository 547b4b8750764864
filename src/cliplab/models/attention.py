"""Scaled dot-product attention, with the kernel chosen for the device and the sequence length.

On the CPU, PyTorch's fused attention kernel loses to an explicit `softmax(q k^T / sqrt(d)) v` on short
sequences, by most in bf16, where its backward pass is slow. Forward and backward at head width 64 on 2
cores of a Xeon with AMX (`python -m bench.bench_attention`): at 17-77 tokens explicit is 1.1-1.7x faster
in fp32 and 5-11x in bf16; at 197-257 tokens the fused kernel is 1.1-1.3x faster in fp32 and explicit
1.5-1.8x faster in bf16; at 577 the fused kernel wins in both (and it stores no L x L scores). On a GPU
the fused kernels are used, always.
"""

import torch
import torch.nn.functional as F
from torch import nn

CPU_EXPLICIT_MAX_TOKENS = 128  # fp32: the cross-over lies between 77 and 197 tokens
CPU_EXPLICIT_MAX_TOKENS_HALF = 320  # bf16 / fp16: between 257 and 577


def explicit_attention_pays(x: torch.Tensor) -> bool:
    """Whether attention over `x` (`[..., L, D]`: L tokens; its dtype, or autocast's) runs faster
    explicitly than fused."""
    if x.device.type != "cpu":
        return False
    half = x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")
    return x.shape[-2] <= (CPU_EXPLICIT_MAX_TOKENS_HALF if half else CPU_EXPLICIT_MAX_TOKENS)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=...)` over `[B, H, L, D]` heads."""
    if not explicit_attention_pays(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if is_causal:
        length = q.shape[-2]
        scores = scores + scores.new_full((length, length), float("-inf")).triu_(1)
    elif attn_mask is not None:
        scores = (
            scores.masked_fill(~attn_mask, float("-inf"))
            if attn_mask.dtype == torch.bool
            else scores + attn_mask
        )
    # The softmax in fp32 whatever the inputs, as the fused kernels accumulate it
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype) @ v


def _choose_timm_kernel(module: nn.Module, args: tuple) -> None:
    module.fused_attn = not explicit_attention_pays(args[0])


def choose_attention_kernels(model: nn.Module) -> None:
    """Makes each timm `Attention` in `model` pick its fused or explicit path per call, by the rule above
    (timm's own explicit path: its `fused_attn` switch)."""
    from timm.layers import Attention

    for module in model.modules():
        if isinstance(module, Attention):
            module.register_forward_pre_hook(_choose_timm_kernel)
