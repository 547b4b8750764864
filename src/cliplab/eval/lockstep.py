"""Evaluation forwards in lockstep across ranks when the model is sharded.

Under FSDP2 (and DeepSpeed ZeRO-3) every forward all-gathers the parameters it uses: a collective. Ranks
evaluate unequal shares (the last batch goes to some ranks only, unreadable images drop a batch), so a
rank that ran fewer forwards would leave the others waiting in an all-gather forever. Before its
batches, the ranks agree on the largest count; after its own, each runs idle forwards on one blank input
until it has run that many.
Replicated models (one process, DDP) skip all of this: their forwards are local.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from cliplab.utils.dist import dist_info


def gathers_in_forward(model: nn.Module) -> bool:
    """Whether a forward of `model` is a collective: FSDP2-sharded modules or ZeRO-3 partitioned parameters."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules()) or any(
        hasattr(p, "ds_id") for p in model.parameters()
    )


class Lockstep:
    """Keeps a sharded model's evaluation forwards equal in number on every rank.

    Made before the loop with this rank's batch count (the counts are agreed by a collective then, while
    no rank is inside a forward); `skipped()` stands in for a batch with nothing to encode, `finish()` runs
    the forwards this rank is short of the busiest. `batches=None` (a loader without a length, already
    equal on every rank) agrees nothing and only stands in for skipped batches.
    """

    def __init__(self, model: nn.Module, batches: int | None, idle: Callable[[], object]):
        self.idle, self.extra = idle, 0
        self.active = dist_info().distributed and gathers_in_forward(model)
        if self.active and batches is not None:
            most = torch.tensor([batches], device=next(model.parameters()).device)
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
            self.extra = int(most) - batches

    def skipped(self) -> None:
        if self.active:
            with torch.no_grad():
                self.idle()

    def finish(self) -> None:
        with torch.no_grad():
            for _ in range(self.extra):
                self.idle()
        self.extra = 0


def blank_images(model: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One blank image at the model's input size, on its device: the input of an idle forward."""
    size = getattr(model, "image_size", None) or getattr(getattr(model, "visual", None), "image_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    param = next(model.parameters())
    return torch.zeros(1, 3, *size, device=param.device, dtype=dtype or param.dtype)


def batch_count(loader) -> int | None:
    """The loader's number of batches, or None where it has no known length (a stream without sizes)."""
    try:
        return len(loader)
    except TypeError:
        return None
