"""Who reads what in a shard stream, and how many batches every rank yields per epoch.

Pure functions of (shard list, sizes, world size, workers, batch): every rank and every worker computes
the same plan without talking to the others, so the plan needs no collective.

The rule (docs/contracts.md, "Even ranks"):
- Finite shards: the shards are dealt once to the world's reader slots (`rank * workers + worker`),
  largest first to the least-filled slot, so the slots' sample counts differ as little as the shard sizes
  allow; each epoch a slot reads its own shards in a new order. With fewer shards than slots, every slot
  reads every shard and keeps every `slots`-th sample instead. A slot's capacity is the number of whole
  batches its samples fill (`sizes.json`). Every rank yields the SAME number of batches each epoch: the
  smallest rank capacity, dealt to each rank's workers round robin up to each worker's capacity. Samples
  beyond a slot's quota are left out of that epoch and counted (`data/unused_samples`).
- Resampled shards, or a given `samples_per_epoch`: `samples_per_epoch // (world * batch)` batches per
  rank, dealt to the workers round robin (the streams never run dry).
"""

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotPlan:
    """What one reader slot (a rank's worker) reads in one epoch."""

    shards: list[str]  # in reading order
    stride: int  # keep every `stride`-th sample of the concatenated shards ...
    offset: int  # ... starting at this one (stride 1, offset 0: keep all)
    quota: int | None  # samples to yield this epoch (None: to the end of the shards)


def deal(total: int, capacities: list[int]) -> list[int]:
    """`total` items dealt round robin to bins that hold at most `capacities[i]` each.

    The closed form of dealing one item per bin per round in index order (a full bin is passed over):
    after `level` full rounds bin i holds min(cap_i, level); the last, partial round gives one more to the
    first bins, in index order, that still have room. Counting one item at a time took a minute for a
    LAION-sized epoch.
    """
    caps = [max(0, cap) for cap in capacities]
    if total <= 0:
        return [0] * len(caps)
    if total > sum(caps):
        raise ValueError(f"cannot deal {total} batches to capacities {capacities}")
    level = _fill_level(total, caps)
    shares = [min(cap, level) for cap in caps]
    left = total - sum(shares)  # fewer than the bins with room above `level`, else `level` were higher
    for i, cap in enumerate(caps):
        if left == 0:
            break
        if cap > level:
            shares[i] += 1
            left -= 1
    return shares


def _fill_level(total: int, caps: list[int]) -> int:
    """The most full rounds `total` items complete: the largest level with sum(min(cap, level)) <= total."""
    low, high = 0, max(caps)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(cap, mid) for cap in caps) <= total:
            low = mid
        else:
            high = mid - 1
    return low


def slot_shards(shards: list[str], sizes: dict[str, int], slots: int) -> list[tuple[list[str], int, int]]:
    """(shards, stride, offset) of each slot: shards dealt by size, or samples when too few shards."""
    if len(shards) < slots:
        return [(list(shards), slots, slot) for slot in range(slots)]
    groups: list[list[str]] = [[] for _ in range(slots)]
    if any(s not in sizes for s in shards):  # unknown sizes: round robin in list order
        for i, shard in enumerate(shards):
            groups[i % slots].append(shard)
    else:
        # the least-filled slot (then the fewest shards, then the lowest index) from a heap: only the slot
        # just filled changes its key, so this is the plain scan over all slots without its shards x slots cost
        least = [(0, 0, k) for k in range(slots)]
        for shard in sorted(shards, key=lambda s: (-sizes[s], s)):
            load, count, slot = heapq.heappop(least)
            groups[slot].append(shard)
            heapq.heappush(least, (load + sizes[shard], count + 1, slot))
    return [(sorted(g), 1, 0) for g in groups]


def slot_sizes(groups, sizes: dict[str, int]) -> list[int] | None:
    """Samples each slot keeps, from the per-shard sizes (None when a size is unknown)."""
    counts = []
    for shards, stride, offset in groups:
        if any(s not in sizes for s in shards):
            return None
        total = sum(sizes[s] for s in shards)
        counts.append(max(0, -(-(total - offset) // stride)))
    return counts


def plan_slot(
    shards: list[str],
    sizes: dict[str, int],
    *,
    rank: int,
    world_size: int,
    worker: int,
    workers: int,
    batch_size: int,
    batches_per_rank: int | None = None,
) -> SlotPlan:
    """This slot's shards and per-epoch quota.

    `batches_per_rank` given (resampled or fixed-length epochs): it is dealt to the workers; else the
    agreed count is the smallest rank capacity (no quota when sizes are unknown: read to the end).
    """
    slots = world_size * workers
    groups = slot_shards(shards, sizes, slots)
    counts = slot_sizes(groups, sizes)
    mine, stride, offset = groups[rank * workers + worker]
    if batches_per_rank is not None:
        quota = deal(batches_per_rank, [batches_per_rank] * workers)[worker] * batch_size
        return SlotPlan(mine, stride, offset, quota)
    if counts is None:
        return SlotPlan(mine, stride, offset, None)
    per_rank = rank_capacities(counts, world_size, workers, batch_size)
    quota = deal(min(sum(c) for c in per_rank), per_rank[rank])[worker] * batch_size
    return SlotPlan(mine, stride, offset, quota)


def rank_capacities(counts: list[int], world_size: int, workers: int, batch_size: int) -> list[list[int]]:
    caps = [c // batch_size for c in counts]
    return [caps[r * workers : (r + 1) * workers] for r in range(world_size)]


def agreed_batches(shards: list[str], sizes: dict[str, int], world_size: int, workers: int, batch_size: int):
    """Batches every rank yields per finite epoch (the loader's length); None when sizes are unknown."""
    counts = slot_sizes(slot_shards(shards, sizes, world_size * workers), sizes)
    if counts is None:
        return None
    return min(sum(c) for c in rank_capacities(counts, world_size, workers, batch_size))
