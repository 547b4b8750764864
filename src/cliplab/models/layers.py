"""Transformer pieces shared by CLIP-style towers, with OpenAI/open_clip parameter names.

Parameter names follow OpenAI's `clip/model.py` (`attn.in_proj_weight`, `mlp.c_fc`, ...) so that released
checkpoints load without renaming; attention itself runs through `cliplab.models.attention.attention`, which
picks the fused kernel or an explicit softmax, whichever is faster for the device and the sequence length.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from cliplab.models.attention import attention
from cliplab.models.recompute import chunked_checkpoint, selective_checkpoint

_QUICK_GELU_SCALE = 1.702


class _QuickGELUFunction(torch.autograd.Function):
    """`x * sigmoid(a x)` written as `silu(a x) / a`, with `d/dx = silu'(a x)` (the two factors of a cancel).

    Elementwise ops are memory-bound: the plain expression costs three passes forward and about five in
    backward (each mul's grad, sigmoid's grad, the sum), saving two tensors. This costs three passes forward,
    one fused `silu_backward` pass in backward, and saves one tensor (`a x`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        scaled = x * _QUICK_GELU_SCALE
        ctx.save_for_backward(scaled)
        return F.silu(scaled).div_(_QUICK_GELU_SCALE)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scaled,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, scaled)


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)`: the GELU approximation OpenAI's CLIP weights were trained with.

    `inplace` is accepted (and ignored) so timm can build it as its `act_layer`.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuickGELUFunction.apply(x)


def make_activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so fp16/bf16 weights keep the statistics stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with packed q/k/v projections (nn.MultiheadAttention's parameter layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: torch.Tensor, is_causal: bool = False, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # [B, L, 3, H, D] -> three [B, H, L, D] views. Split at the "3" axis, not after moving it first:
        # SDPA's backward returns q/k/v gradients laid out [B, L, H, D], so autograd stacks them straight
        # into qkv's [B, L, 3, H, D] layout (one pass) instead of stacking, then copying to that layout.
        q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, length, 3, self.heads, -1).unbind(2))
        out = attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu"):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", make_activation(act)),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(
        self, x: torch.Tensor, is_causal: bool = False, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), is_causal=is_causal, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first `[B, L, W]` sequences."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = False  # full: keep block inputs only, rerun whole blocks
        self.checkpoint_chunks = 1  # with grad_checkpointing: rerun each block over this many batch slices
        self.selective_recompute = False  # keep matmul outputs, rerun norms/GELU (cliplab.models.recompute)
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, act) for _ in range(layers)
        )

    def forward(
        self, x: torch.Tensor, is_causal: bool = False, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # A per-sample mask would need slicing too: those run as one chunk.
                chunks = self.checkpoint_chunks if attn_mask is None or attn_mask.dim() == 2 else 1
                x = chunked_checkpoint(block, x, is_causal, attn_mask, chunks=chunks)
            elif self.selective_recompute and torch.is_grad_enabled():
                x = selective_checkpoint(block, x, is_causal, attn_mask)
            else:
                x = block(x, is_causal=is_causal, attn_mask=attn_mask)
        return x

    def init_openai_(self) -> None:
        """OpenAI's init: std W^-0.5 for q/k/v, scaled by (2L)^-0.5 for the residual outputs."""
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class PatchConv2d(nn.Conv2d):
    """A ViT's patch embedding (a convolution whose stride is its kernel), computed on the CPU as one matmul
    over the cut-out patches: the same weights and result as the convolution, whose backward is slow there
    (tiny ViT, b128: forward + weight gradient 21 ms under bf16 autocast against 2.5 ms; fp32 11 against 7).
    Other devices run the convolution. Build it with `PatchConv2d.replacing(conv)`."""

    @classmethod
    def replacing(cls, conv: nn.Conv2d) -> nn.Conv2d:
        """`conv` as a PatchConv2d sharing its parameters, or `conv` itself where it is not patch-wise."""
        patchwise = (
            conv.stride == conv.kernel_size
            and conv.padding in ((0, 0), "valid")
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        )
        if not patchwise or type(conv) is not nn.Conv2d:
            return conv
        with torch.device("meta"):
            new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, bias=False)
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (batch, channels, height, width) = self.kernel_size, x.shape
        if x.device.type != "cpu" or height % ph or width % pw:  # a ragged edge: the convolution drops it
            return super().forward(x)
        rows, cols = height // ph, width // pw
        patches = x.reshape(batch, channels, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
        out = F.linear(patches.reshape(batch * rows * cols, -1), self.weight.flatten(1), self.bias)
        return out.view(batch, rows, cols, -1).permute(0, 3, 1, 2)  # NCHW, as the convolution returns
