"""The stream plan's closed forms give exactly what their one-at-a-time references give, and a LAION-sized
epoch is planned in one go (its speed is never asserted: the old loops took a minute or more here)."""

import random

import pytest

from cliplab.data.stream_plan import agreed_batches, deal, plan_slot, slot_shards


def deal_one_at_a_time(total: int, capacities: list[int]) -> list[int]:
    """The reference: one item per bin per round, in index order, full bins passed over."""
    shares = [0] * len(capacities)
    left = total
    while left > 0:
        progressed = False
        for i, cap in enumerate(capacities):
            if left and shares[i] < cap:
                shares[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot deal {total} batches to capacities {capacities}")
    return shares


def slot_shards_by_scan(shards: list[str], sizes: dict[str, int], slots: int) -> list[list[str]]:
    """The reference: largest shard first to the least-filled slot, found by scanning every slot."""
    groups: list[list[str]] = [[] for _ in range(slots)]
    load = [0] * slots
    for shard in sorted(shards, key=lambda s: (-sizes[s], s)):
        slot = min(range(slots), key=lambda k: (load[k], len(groups[k]), k))
        groups[slot].append(shard)
        load[slot] += sizes[shard]
    return [sorted(g) for g in groups]


def random_capacities(rng: random.Random) -> list[int]:
    bins = rng.randint(0, 9)
    top = rng.choice([1, 3, 10, 60])
    return [rng.randint(-2 if rng.random() < 0.1 else 0, top) for _ in range(bins)]


def test_deal_equals_dealing_one_at_a_time():
    rng = random.Random(16)
    cases = 0
    for _ in range(3000):
        caps = random_capacities(rng)
        room = sum(max(0, c) for c in caps)
        total = rng.randint(-1, room + 2)
        if total > room:
            with pytest.raises(ValueError):
                deal_one_at_a_time(total, caps)
            with pytest.raises(ValueError):
                deal(total, caps)
        else:
            assert deal(total, caps) == deal_one_at_a_time(total, caps), (total, caps)
            cases += 1
    assert cases > 2000  # mostly dealable cases, not mostly errors


def test_deal_edges():
    assert deal(0, []) == [] and deal(0, [3, 4]) == [0, 0]
    assert deal(7, [7, 0, 7]) == [4, 0, 3]  # an empty bin is passed over
    assert deal(5, [1, 9, 1, 9]) == [1, 2, 1, 1]  # the last round starts at the first bin with room
    assert deal(20, [1, 9, 1, 9]) == [1, 9, 1, 9]
    with pytest.raises(ValueError, match="cannot deal 21"):
        deal(21, [1, 9, 1, 9])


def test_shards_dealt_by_heap_equal_the_scan_over_slots():
    rng = random.Random(7)
    for _ in range(300):
        count = rng.randint(1, 40)
        shards = [f"s{i:03d}" for i in range(count)]
        rng.shuffle(shards)
        top = rng.choice([1, 5, 100])  # small tops make ties, which the fewest-shards rule breaks
        sizes = {s: rng.randint(0, top) for s in shards}
        slots = rng.randint(1, count)
        assert [g for g, _, _ in slot_shards(shards, sizes, slots)] == slot_shards_by_scan(
            shards, sizes, slots
        )


def test_a_laion_sized_epoch_is_planned_in_one_go():
    # data=laion: 400 M samples an epoch on 41,408 shards; here 8 ranks x 8 workers at 1 sample a batch
    shards = [f"/data/laion/{i:05d}.tar" for i in range(41408)]
    fixed = 400_000_000 // 8
    quotas = [
        plan_slot(
            shards, {}, rank=3, world_size=8, worker=w, workers=8, batch_size=1, batches_per_rank=fixed
        ).quota
        for w in range(8)
    ]
    assert quotas == [fixed // 8] * 8
    # the same shards with known, uneven sizes (a finite epoch): every rank's workers fill the agreed count
    rng = random.Random(0)
    sizes = {s: rng.randint(9000, 10000) for s in shards}
    agreed = agreed_batches(shards, sizes, 8, 8, 1)
    assert 8 * agreed <= sum(sizes.values()) < 8 * (agreed + 10000)  # a rank short by under a shard
    for rank in (0, 7):
        plans = [
            plan_slot(shards, sizes, rank=rank, world_size=8, worker=w, workers=8, batch_size=1)
            for w in range(8)
        ]
        assert sum(p.quota for p in plans) == agreed
        assert all(p.quota <= sum(sizes[s] for s in p.shards) for p in plans)
