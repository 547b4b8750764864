"""Autograd-aware all-gather of per-rank feature rows, and small helpers on the process group.

Why our own Function: `torch.distributed.nn.functional.all_gather` computes the right gradient for this
use (its backward reduce-scatters the SUM of every rank's gradient w.r.t. the gathered copies, which is
what each rank computing its own slice of the global loss needs), but in torch 2.x it is deprecated
(FutureWarning on every call) and returns a tuple of tensors. This one returns one concatenated tensor
and keeps the same gradient semantics: d(sum over ranks of loss_r) / d(local rows).
"""

import contextlib

import torch
import torch.distributed as dist

from cliplab.utils.dist import dist_info

_LOCAL_ONLY = False  # set by `local_only()`: losses score the rows they are given, gathering nothing


def is_distributed() -> bool:
    """True when a loss must gather across ranks (initialised group with more than one process)."""
    return not _LOCAL_ONLY and dist_info().distributed


@contextlib.contextmanager
def local_only():
    """Within: losses treat their inputs as the whole batch (already gathered, e.g. for validation)."""
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


def rank_and_world_size() -> tuple[int, int]:
    info = dist_info()
    return (info.rank, info.world_size) if is_distributed() else (0, 1)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        local = local.contiguous()
        gathered = local.new_empty((world_size * local.shape[0], *local.shape[1:]))
        dist.all_gather_into_tensor(gathered, local)
        return gathered

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor) -> torch.Tensor:
        grad_gathered = grad_gathered.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            grad_local = grad_gathered.new_empty((ctx.rows, *grad_gathered.shape[1:]))
            dist.reduce_scatter_tensor(grad_local, grad_gathered, op=dist.ReduceOp.SUM)
            return grad_local
        # gloo has no reduce-scatter: sum the whole gradient and keep our rows (features are small)
        grad_gathered = grad_gathered.clone()
        dist.all_reduce(grad_gathered, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad_gathered[start : start + ctx.rows]


def all_gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `local` along dim 0 (rank order); gradients flow back to every rank.

    All ranks must pass the same shape. Without a process group (or with one process) returns `local`.
    """
    if not is_distributed():
        return local
    return _AllGatherWithGrad.apply(local)


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows in rank order, row counts free to differ (no gradient): for evaluation, where
    ranks hold different numbers of samples. Gathers under `local_only()` too: it is what feeds it."""
    if not dist_info().distributed:
        return local
    local = local.contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device))
    longest = int(max(sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes)])
