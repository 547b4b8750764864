"""Selective activation recomputation: keep the matmul and attention outputs of a transformer block, and
recompute its cheap elementwise ops (layer norms, GELU, residual adds, head reshapes) in the backward pass.

A pre-LN block stores about 17 activations of size `[B, L, W]` for its backward; 6 of them are outputs of
layer norms and the GELU, which cost almost nothing to recompute from the matmul outputs kept anyway.
Recomputing them cuts block activation memory by about a third for a few percent more elementwise work,
and the recomputed values are bit-identical (same ops, same inputs), so gradients do not change.
Full activation checkpointing (`grad_checkpointing`) keeps only block inputs and reruns whole blocks;
`chunked_checkpoint` reruns them one slice of the batch at a time, so only a slice's activations are alive.
"""

import functools

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_aten = torch.ops.aten
# Outputs worth keeping: everything whose recomputation would cost matmul FLOPs.
_SAVED_OPS = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
}


def _keep_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_context = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)


def selective_checkpoint(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, storing only matmul/attention outputs (plus the inputs) for backward."""
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_context, **kwargs)


class SelectiveRecomputeSequential(nn.Sequential):
    """An `nn.Sequential` of blocks that recomputes each block's elementwise ops in backward.

    Used by swapping the class of an existing container (`use_selective_recompute`), so the module tree and
    the state-dict keys stay exactly those of the original model.
    """

    def forward(self, x):
        if not torch.is_grad_enabled():
            return super().forward(x)
        for block in self:
            x = selective_checkpoint(block, x)
        return x


def chunked_checkpoint(fn, x: torch.Tensor, *args, chunks: int = 1) -> torch.Tensor:
    """Full activation checkpointing of `fn(x, *args)`, run over `chunks` slices of the batch (dim 0).

    Each slice is its own checkpoint, and autograd finishes one slice's backward before starting the next
    (its nodes are newer), so the recomputed activations of a block shrink by `chunks` for the same FLOPs;
    the kept block inputs are the same. Exact only for blocks that treat samples independently
    (LayerNorm transformers; not BatchNorm).
    """
    if chunks <= 1 or x.shape[0] < 2:
        return checkpoint(fn, x, *args, use_reentrant=False)
    return torch.cat([checkpoint(fn, part, *args, use_reentrant=False) for part in x.chunk(chunks)])


class ChunkedCheckpointSequential(nn.Sequential):
    """An `nn.Sequential` of blocks under full checkpointing, each block recomputed in `checkpoint_chunks`
    slices of the batch (swapped in by `use_chunked_checkpointing`; module tree and keys unchanged)."""

    checkpoint_chunks = 1

    def forward(self, x):
        if not torch.is_grad_enabled():
            return super().forward(x)
        for block in self:
            x = chunked_checkpoint(block, x, chunks=self.checkpoint_chunks)
        return x


def use_chunked_checkpointing(blocks: nn.Sequential, chunks: int) -> None:
    """Switches a `nn.Sequential` of blocks to chunked full checkpointing (chunks > 1) or back to plain."""
    if chunks > 1:
        blocks.__class__ = ChunkedCheckpointSequential
        blocks.checkpoint_chunks = chunks
    elif type(blocks) is ChunkedCheckpointSequential:
        blocks.__class__ = nn.Sequential


def use_selective_recompute(blocks: nn.Sequential, enable: bool = True) -> None:
    """Switches a plain `nn.Sequential` of blocks to (or back from) selective recomputation in place."""
    if enable and type(blocks) is nn.Sequential:
        blocks.__class__ = SelectiveRecomputeSequential
    elif not enable and type(blocks) is SelectiveRecomputeSequential:
        blocks.__class__ = nn.Sequential
