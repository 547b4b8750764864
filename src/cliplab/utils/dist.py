"""The one answer to "which process am I, of how many?" (torch.distributed's process group, if any)."""

from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int

    @property
    def distributed(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo(0, 1)
