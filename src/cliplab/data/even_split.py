"""Samplers for map-style sources (tables, folders) that keep ranks even and runs resumable.

- Training: torch's `DistributedSampler(drop_last=True)` gives every rank the same count; wrapped so that
  each index carries its epoch, which seeds that sample's augmentation (a resumed run draws the same
  crops without replaying the epoch).
- Evaluation: `EvenSplitBatches` gives every rank the same number of batches and every sample to exactly
  one rank (no padding duplicates, which would bias the metrics).
"""

from torch.utils.data import DistributedSampler, Sampler


class EpochIndexSampler(Sampler):
    """Yields `(epoch, index)` from a distributed sampler; Lightning calls `set_epoch` each epoch."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)


def even_batch_bounds(share: int, largest_share: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch when `share` items are split into as many batches as the largest
    share over ranks needs, near-equal in size (every batch of a rank with one item fewer stays full
    but for one)."""
    batches = -(-largest_share // batch_size)
    return [(j * share // batches, (j + 1) * share // batches) for j in range(batches)]


class EvenSplitBatches(Sampler):
    """Batches of indices `rank, rank + world, ...`, the same number on every rank."""

    def __init__(self, length: int, rank: int, world_size: int, batch_size: int):
        self.indices = list(range(rank, length, world_size))
        largest = len(range(0, length, world_size))
        self.bounds = even_batch_bounds(len(self.indices), largest, batch_size)

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self):
        for start, end in self.bounds:
            yield self.indices[start:end]
