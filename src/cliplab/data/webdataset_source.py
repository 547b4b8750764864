"""Webdataset (img2dataset layout) streaming source: even ranks, resampling, mixing, exact resume.

`WebDatasetSource` is what a config describes; the data module calls `build(...)` once it knows the
rank, the world size and the per-device batch, which gives a `ShardStream` (training: a resumable
IterableDataset of samples) or an `EvenSplitStream` (evaluation: every sample once, equal batch counts).

- Finite mode: the shards are dealt to reader slots (rank x worker) once, by size; each epoch every slot
  reads its own shards in a new order and yields its quota, so every rank yields the same number of
  batches (the rule and its bookkeeping: `cliplab.data.stream_plan`, docs/contracts.md).
- Resampled mode (`resampled=True`): each slot draws shards with replacement (a source first, by
  `weights`, then a shard uniformly), forever; `samples_per_epoch` cuts the epochs.
- Shuffling is by blocks of `shuffle_buffer` samples, each shuffled with a seed of its own: a position in
  the stream is (shard, sample, block, index in block), small enough to checkpoint, and resuming re-reads
  one block instead of replaying the epoch. Augmentation draws come from a generator seeded per sample.
"""

import logging
import random
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from cliplab.data import faults as F
from cliplab.data.even_split import even_batch_bounds
from cliplab.data.interface import DataSource
from cliplab.data.samples import sample_from_dict
from cliplab.data.seeds import stable_seed
from cliplab.data.shard_lists import expand_shards, shard_sizes
from cliplab.data.stream_plan import SlotPlan, agreed_batches, plan_slot
from cliplab.data.tar_reader import ShardUnreadable, TruncatedTar, iter_tar_samples, open_shard
from cliplab.utils.errors import DataError

log = logging.getLogger(__name__)


class WebDatasetSource(DataSource):
    """Config-level description of a set of webdataset shards.

    Args:
        urls: shard specification (see `cliplab.data.shard_lists`); a list (or `::`-joined string) of
            several specifications is several sources, mixed by `weights` when resampled.
        weights: relative sampling weight of each source (resampled mode only); default equal.
        resampled: draw shards with replacement, endlessly (needs a known or given `samples_per_epoch`).
        samples_per_epoch: epoch length in samples over all ranks; default: the total of `sizes.json`.
        shuffle_buffer: samples held (still encoded) for shuffling within the stream; 0 disables.
        shuffle: shuffle shards and samples (set False for evaluation).
    """

    def __init__(
        self,
        urls,
        weights=None,
        resampled: bool = False,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 1000,
        shuffle: bool = True,
        setting: str = "urls",
    ):
        self.urls = urls
        self.weights = None if weights is None else [float(w) for w in weights]
        self.resampled = bool(resampled)
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle = bool(shuffle)
        self.setting = setting

    def shard_lists(self, setting: str | None = None) -> list[list[str]]:
        specs = self.urls if isinstance(self.urls, (list, tuple)) else str(self.urls).split("::")
        specs = [s for s in specs if str(s).strip()]
        lists = [expand_shards(s, setting or self.setting) for s in specs] if specs else []
        if not lists:
            expand_shards(None, setting or self.setting)  # raises the start-up error
        if self.weights is not None and len(self.weights) != len(lists):
            raise ValueError(f"{len(self.weights)} weights given for {len(lists)} shard sources")
        return lists

    def build(
        self,
        transform,
        faults,
        *,
        rank=0,
        world_size=1,
        batch_size=1,
        workers=0,
        seed=0,
        setting=None,
        train=True,
    ):
        lists = self.shard_lists(setting)
        if self.weights is not None and not self.resampled:
            log.warning("data source weights only apply with resampled=True; concatenating the sources")
        urls = [u for lst in lists for u in lst]
        sizes = shard_sizes(urls)
        known = len(sizes) == len(urls)
        if self.resampled and self.samples_per_epoch is None and not known:
            raise DataError(
                f"{setting or self.setting}: resampled shards need samples_per_epoch (no sizes.json covers "
                "all shards)"
            )
        if not train:
            return EvenSplitStream(
                urls, sizes if known else None, transform, faults, rank=rank, world_size=world_size,
                batch_size=batch_size,
            )  # fmt: skip
        samples = self.samples_per_epoch
        if samples is None and self.resampled:
            samples = sum(sizes.values())
        stream = ShardStream(
            lists,
            sizes,
            transform,
            faults,
            weights=self.weights,
            resampled=self.resampled,
            samples_per_epoch=samples,
            shuffle=self.shuffle,
            shuffle_buffer=self.shuffle_buffer if self.shuffle else 0,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            workers=workers,
            seed=seed,
        )
        batches = stream.batches_per_epoch()
        if world_size > 1 and batches is None:
            raise DataError(
                f"{setting or self.setting}: {world_size} ranks must agree on the batches of an epoch, but "
                "no sizes.json gives every shard's sample count: write one (cliplab.data.shards writes it "
                "with the shards) or set samples_per_epoch"
            )
        if batches == 0:
            raise DataError(
                f"{setting or self.setting}: a rank's share of {sum(sizes.values())} samples fills no batch "
                f"of {batch_size} (world size {world_size}, {max(workers, 1)} workers per rank): use fewer "
                "workers or a smaller batch"
            )
        if batches is not None and not self.resampled and self.samples_per_epoch is None:
            used = batches * batch_size * world_size
            total = sum(sizes.values())
            if used < total:
                log.info(
                    "each epoch trains on %d of %d samples: the %d left over by the even split of %d shards "
                    "over %d ranks x %d workers rotate between epochs",
                    used, total, total - used, len(urls), world_size, max(workers, 1),
                )  # fmt: skip
        return stream


@dataclass
class StreamPosition:
    """Where a slot's stream stands: enough to continue it exactly after a restart (plain ints: it is
    saved in checkpoints, which load with weights_only=True)."""

    epoch: int = 0
    repeat: int = 0  # passes restarted to fill the quota after faults left the slot short
    block: int = 0  # shuffle blocks started this epoch
    shard: int = 0  # index in the epoch's shard sequence where the current block starts
    sample: int = 0  # raw samples of that shard before the block's first one
    kept: int = 0  # raw samples counted by the stride filter before it (sample-split slots)
    index: int = 0  # entries of the current block already taken
    yielded: int = 0  # samples yielded this epoch
    done: bool = False  # the epoch's quota is complete


class ShardStream(IterableDataset):
    """Iterates `(uint8 image array, caption)` over this rank's and this worker's share of the shards.

    Stateful for torchdata's StatefulDataLoader: `state_dict()` (taken in the worker after each batch)
    is the stream position; `load_state_dict()` continues from it on restart.
    """

    def __init__(
        self,
        shard_lists,
        sizes,
        transform,
        faults: F.FaultLog,
        *,
        weights=None,
        resampled=False,
        samples_per_epoch=None,
        shuffle=True,
        shuffle_buffer=1000,
        rank=0,
        world_size=1,
        batch_size=1,
        workers=0,
        seed=0,
    ):
        self.shard_lists = [list(s) for s in shard_lists]
        self.sizes = dict(sizes)
        self.transform = transform
        self.faults = faults
        self.weights = weights or [1.0] * len(self.shard_lists)
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.workers = max(1, int(workers))
        self.seed = seed
        self.epoch = 0  # set by the data loader in the main process (see EpochDataLoader)
        self._next_epoch = 0  # the epoch the next iteration streams (workers advance their own copy)
        self._resume: StreamPosition | None = None
        self._position = StreamPosition()

    @property
    def urls(self) -> list[str]:
        return [u for lst in self.shard_lists for u in lst]

    def batches_per_epoch(self) -> int | None:
        """Per-device batches per epoch, the same on every rank; None when unknown (one rank, no sizes)."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch // (self.batch_size * self.world_size)
        return agreed_batches(self.urls, self.sizes, self.world_size, self.workers, self.batch_size)

    def __len__(self) -> int:
        batches = self.batches_per_epoch()
        if batches is None:
            raise TypeError("this shard stream has no known length (no sizes.json, no samples_per_epoch)")
        return batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self._next_epoch = int(epoch)

    # ---- checkpointed position (torchdata's Stateful protocol) -----------------------------------
    def state_dict(self) -> dict:
        return asdict(self._position)

    def load_state_dict(self, state: dict) -> None:
        position = StreamPosition(**state)
        if position.done:
            self._resume, self._next_epoch = None, position.epoch + 1
        else:
            self._resume, self._next_epoch = position, position.epoch

    def forget_position(self) -> None:
        self._resume = None

    # ------------------------------------------------------------------------------------------------
    def _plan(self, worker: int) -> SlotPlan:
        fixed = self.batches_per_epoch() if self.samples_per_epoch is not None else None
        return plan_slot(
            self.urls,
            self.sizes,
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            workers=self.workers,
            batch_size=self.batch_size,
            batches_per_rank=fixed,
        )

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            raise RuntimeError(f"stream planned for {self.workers} workers runs in {info.num_workers}")
        slot = self.rank * self.workers + worker
        plan = self._plan(worker)
        position = self._resume or StreamPosition(epoch=self._next_epoch)
        self._resume, self._next_epoch = None, position.epoch + 1
        self._position = position
        if plan.quota == 0 or position.done:
            position.done = True
            return
        generator = torch.Generator()
        while True:
            for sample in self._pass(plan, slot, position, generator):
                position.yielded += 1
                position.done = plan.quota is not None and position.yielded >= plan.quota
                yield sample
                if position.done:
                    return
            if plan.quota is None or self.resampled:
                position.done = True
                return
            # Faults left this slot short of its quota: the other ranks expect its batches, so it reads
            # its shards again (counted; never silently).
            if position.repeat >= 3 or position.yielded == 0 and position.repeat >= 1:
                raise DataError(
                    f"rank {self.rank} worker {worker}: {position.yielded} readable samples of a quota of "
                    f"{plan.quota} after {position.repeat + 1} passes over its shards"
                )
            log.warning(
                "rank %d worker %d: %d samples short of its epoch quota after skipped data; re-reading its "
                "shards (samples repeat this epoch)", self.rank, worker, plan.quota - position.yielded,
            )  # fmt: skip
            position.repeat += 1
            position.block = position.shard = position.sample = position.kept = position.index = 0

    def _pass(self, plan: SlotPlan, slot: int, position: StreamPosition, generator: torch.Generator):
        """Samples of one pass over the slot's shard sequence, continuing at `position` (updated in place
        before each sample is handed out, so that a snapshot after a batch points past it)."""
        epoch, repeat = position.epoch, position.repeat
        blocks = self._blocks(self._shard_sequence(plan, slot, epoch, repeat), plan, position)
        first = True
        for block_index, start, block in blocks:
            if self.shuffle_buffer > 1:
                random.Random(stable_seed(self.seed, epoch, slot, repeat, block_index)).shuffle(block)
            skip = position.index if first else 0
            first = False
            position.block, (position.shard, position.sample, position.kept) = block_index, start
            for index in range(skip, len(block)):
                shard, raw = block[index]
                position.index = index + 1
                generator.manual_seed(stable_seed(self.seed, epoch, slot, repeat, block_index, index))
                sample = sample_from_dict(
                    raw,
                    self.transform,
                    self.faults,
                    shard,
                    generator=generator,
                    caption_seed=(self.seed, epoch),
                )
                if sample is not None:
                    yield sample
            position.index = 0

    def _shard_sequence(self, plan: SlotPlan, slot: int, epoch: int, repeat: int):
        """The shards this slot reads in this epoch, in order: a finite list, or endless draws."""
        if self.resampled:
            return _ResampledShards(self.shard_lists, self.weights, (self.seed, epoch, slot, repeat))
        shards = list(plan.shards)
        if self.shuffle:
            # Sample-split slots share their shard list: the order must be the same in all of them.
            key = (self.seed, epoch, repeat) if plan.stride > 1 else (self.seed, epoch, slot, repeat)
            random.Random(stable_seed(*key)).shuffle(shards)
        return shards

    def _blocks(self, shards, plan: SlotPlan, position: StreamPosition):
        """(block index, start position, [(shard, raw sample)]) from `position`'s block on."""
        size = max(1, self.shuffle_buffer)
        block, start, index = [], None, position.block
        for location, shard, raw in self._kept_samples(shards, plan, position):
            if not block:
                start = location
            block.append((shard, raw))
            if len(block) == size:
                yield index, start, block
                block, index = [], index + 1
        if block:
            yield index, start, block

    def _kept_samples(self, shards, plan: SlotPlan, position: StreamPosition):
        """((shard index, sample in shard, kept counter), shard, raw) of this slot's samples, from the
        start of `position`'s block."""
        kept = position.kept
        k = position.shard
        while True:
            shard = shards[k] if isinstance(shards, list) else shards.get(k)
            if shard is None:
                return
            skip = position.sample if k == position.shard else 0
            # Slots that share shards (sample split) leave shard-level faults to the first of them.
            faults = self.faults if plan.offset == 0 else _UNRECORDED
            for n, raw in enumerate(shard_samples(shard, faults, skip), start=skip):
                mine = kept % plan.stride == plan.offset
                if mine:
                    yield (k, n, kept), shard, raw
                kept += 1
            k += 1
            if isinstance(shards, list) and k >= len(shards):
                return


def shard_samples(shard: str, faults, skip: int = 0):
    """Raw sample dicts of one shard after the first `skip`; shard-level faults are recorded in `faults`."""
    last_key = None
    try:
        stream = open_shard(shard)
    except ShardUnreadable as e:
        faults.record(F.UNREADABLE_SHARD, shard, None, str(e))
        return
    completed = False
    try:
        for n, raw in enumerate(iter_tar_samples(stream)):
            last_key = raw["__key__"]
            if n >= skip:
                yield raw
        completed = True
    except TruncatedTar as e:
        faults.record(F.TRUNCATED_SHARD, shard, last_key, str(e))
    except (ShardUnreadable, OSError) as e:
        faults.record(F.UNREADABLE_SHARD, shard, last_key, str(e))
    finally:
        # Only a stream read to its end is checked on close (a pipe stopped early dies of SIGPIPE).
        try:
            stream.close()
        except (ShardUnreadable, OSError) as e:
            if completed:
                faults.record(F.UNREADABLE_SHARD, shard, last_key, str(e))


class _Unrecorded:
    """A fault log that keeps nothing: for readers whose faults another reader records."""

    def record(self, *args, **kwargs) -> None:
        pass


_UNRECORDED = _Unrecorded()


class _ResampledShards:
    """Endless shard draws, the k-th a pure function of (key, k): any position can be re-entered."""

    def __init__(self, shard_lists, weights, key):
        total = sum(weights)
        self.cumulative = [sum(weights[: i + 1]) / total for i in range(len(weights))]
        self.shard_lists, self.key = shard_lists, key

    def get(self, k: int) -> str:
        rng = random.Random(stable_seed(*self.key, k))
        r = rng.random()
        source = next((i for i, c in enumerate(self.cumulative) if r <= c), len(self.cumulative) - 1)
        return rng.choice(self.shard_lists[source])


class EvenSplitStream(IterableDataset):
    """Evaluation stream: every sample exactly once over all ranks, the same number of batches on each.

    Sample i of the shards (in list order) belongs to rank `i % world_size`; each rank splits its share
    into `ceil(largest share / batch_size)` batches of near-equal size (so a rank with one sample fewer
    ends with smaller batches, never with fewer), and its workers take the batches round robin. The
    stream yields whole batches (lists of samples): use it with `batch_size=None` in the data loader.
    """

    def __init__(self, urls, sizes, transform, faults, *, rank=0, world_size=1, batch_size=1):
        self.urls = list(urls)
        self.transform = transform
        self.faults = faults
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.total = sum(sizes[u] for u in self.urls) if sizes is not None else None
        if world_size > 1 and self.total is None:
            raise DataError(
                f"evaluation over {world_size} ranks needs every shard's sample count (a sizes.json beside "
                "the shards, which cliplab.data.shards writes)"
            )
        if self.total is not None and world_size > 1 and self.total < world_size:
            raise DataError(f"{self.total} evaluation samples cannot be split over {world_size} ranks")

    def _share(self, rank: int) -> int:
        return len(range(rank, self.total, self.world_size))

    def batch_bounds(self) -> list[tuple[int, int]] | None:
        """[start, end) of each batch in this rank's share (None when the length is unknown)."""
        if self.total is None:
            return None
        return even_batch_bounds(self._share(self.rank), self._share(0), self.batch_size)

    def __len__(self) -> int:
        bounds = self.batch_bounds()
        if bounds is None:
            raise TypeError("this evaluation stream has no known length (no sizes.json)")
        return len(bounds)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        bounds = self.batch_bounds()
        ends = None if bounds is None else {end: j for j, (_, end) in enumerate(bounds)}
        # Every rank and worker reads every shard: shard-level faults are recorded by the first only.
        faults = self.faults if self.rank == worker == 0 else _UNRECORDED
        samples = ((shard, raw) for shard in self.urls for raw in shard_samples(shard, faults))
        batch, mine, in_batch, j = [], 0, 0, 0
        for i, (shard, raw) in enumerate(samples):
            if i % self.world_size != self.rank:
                continue
            mine += 1
            in_batch += 1
            if j % workers == worker:
                batch.append(sample_from_dict(raw, self.transform, self.faults, shard))
            if in_batch == self.batch_size if ends is None else mine in ends:
                if j % workers == worker:
                    yield [s for s in batch if s is not None]
                batch, in_batch, j = [], 0, j + 1
        if in_batch and j % workers == worker:
            yield [s for s in batch if s is not None]
