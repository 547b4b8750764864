"""Webdataset (img2dataset layout) streaming source: disjoint per rank and worker, resampling, mixing.

`WebDatasetSource` is what a config describes; the data module calls `build(...)` once it knows the
rank, the world size and the per-device batch, which gives a `ShardStream` (an IterableDataset).

- Finite mode: every epoch the shard list is shuffled with a seed shared by all ranks, then split
  `shards[rank::world][worker::workers]`, so the streams are disjoint and together cover everything once.
- Resampled mode (`resampled=True`): each worker draws shards with replacement from its own seeded RNG
  (a source first, by `weights`, then a shard uniformly), forever; `samples_per_epoch` cuts the epochs.
  This is the mode for training by samples seen: no epoch boundaries to resume at.
- `samples_per_epoch` (per epoch, all ranks together) gives the data loader a length: each worker yields
  a whole number of per-device batches so that the ranks' loaders stop after the same number of steps.
"""

import logging
import random

import torch
from torch.utils.data import IterableDataset, get_worker_info

from cliplab.data import faults as F
from cliplab.data.samples import sample_from_dict
from cliplab.data.shard_lists import expand_shards, shard_sizes
from cliplab.data.tar_reader import ShardUnreadable, TruncatedTar, iter_tar_samples, open_shard

log = logging.getLogger(__name__)


class WebDatasetSource:
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
        self, transform, faults, *, rank=0, world_size=1, batch_size=1, seed=0, setting=None, train=True
    ):
        lists = self.shard_lists(setting)
        if self.weights is not None and not self.resampled:
            log.warning("data source weights only apply with resampled=True; concatenating the sources")
        samples = self.samples_per_epoch
        if samples is None:
            sizes = shard_sizes([u for lst in lists for u in lst])
            if len(sizes) == sum(len(lst) for lst in lists):
                samples = sum(sizes.values())
        if self.resampled and samples is None:
            raise ValueError("resampled shards need samples_per_epoch (no sizes.json covers all shards)")
        return ShardStream(
            lists,
            transform,
            faults,
            weights=self.weights,
            resampled=self.resampled,
            samples_per_epoch=samples if (self.resampled or self.samples_per_epoch is not None) else None,
            nominal_samples=samples,
            shuffle=self.shuffle and train,
            shuffle_buffer=self.shuffle_buffer if (self.shuffle and train) else 0,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            seed=seed,
        )


class ShardStream(IterableDataset):
    """Iterates `(uint8 image array, caption)` over this rank's and this worker's share of the shards."""

    def __init__(
        self,
        shard_lists,
        transform,
        faults: F.FaultLog,
        *,
        weights=None,
        resampled=False,
        samples_per_epoch=None,
        nominal_samples=None,
        shuffle=True,
        shuffle_buffer=1000,
        rank=0,
        world_size=1,
        batch_size=1,
        seed=0,
    ):
        self.shard_lists = [list(s) for s in shard_lists]
        self.transform = transform
        self.faults = faults
        self.weights = weights or [1.0] * len(self.shard_lists)
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        self.nominal_samples = nominal_samples
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0  # advanced by the data loader in the main process (see EpochDataLoader)
        self._local_iterations = 0  # advanced in the worker (persistent workers never see the main copy)

    @property
    def num_shards(self) -> int:
        return sum(len(s) for s in self.shard_lists)

    def batches_per_epoch(self) -> int | None:
        """Per-device batches per epoch when the epoch has a length (equal on every rank)."""
        samples = self.samples_per_epoch if self.samples_per_epoch is not None else self.nominal_samples
        if samples is None:
            return None
        return max(1, samples // (self.batch_size * self.world_size))

    def __len__(self) -> int:
        batches = self.batches_per_epoch()
        if batches is None:
            raise TypeError("this shard stream has no known length (no sizes.json, no samples_per_epoch)")
        return batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._local_iterations = 0  # a fresh copy per epoch counts from here

    # ------------------------------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Persistent workers keep the copy made at their first epoch: they count epochs themselves.
        epoch = self.epoch + self._local_iterations
        self._local_iterations += 1
        epoch_seed = (self.seed, epoch)
        if (
            info is not None
        ):  # augmentation draws from the worker's torch RNG: make it a function of the epoch
            torch.manual_seed(hash((*epoch_seed, self.rank, worker)) % 2**63)
        quota = None
        if self.samples_per_epoch is not None:
            batches = self.batches_per_epoch()
            mine = batches // workers + (1 if worker < batches % workers else 0)
            quota = mine * self.batch_size
        stream_rng = random.Random(hash((*epoch_seed, self.rank, worker)))
        if self.resampled:
            shards = self._resampled_shards(stream_rng)
        else:
            shards = self._my_shards(random.Random(hash(epoch_seed)), self.rank, worker, workers)
        samples = self._samples(shards)
        if self.shuffle_buffer > 1:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, stream_rng)
        yielded = 0
        for shard, raw in samples:
            if quota is not None and yielded >= quota:
                break
            sample = sample_from_dict(raw, self.transform, self.faults, shard)
            if sample is not None:
                yielded += 1
                yield sample

    def _my_shards(self, rng: random.Random, rank: int, worker: int, workers: int):
        shards = [u for lst in self.shard_lists for u in lst]
        if self.shuffle:
            rng.shuffle(shards)  # same permutation on every rank and worker: the split stays a partition
        mine = shards[rank :: self.world_size][worker::workers]
        if not mine:
            log.warning(
                "rank %d worker %d has no shards (%d shards for %d ranks x %d workers)",
                rank,
                worker,
                len(shards),
                self.world_size,
                workers,
            )
        return mine

    def _resampled_shards(self, rng: random.Random):
        total = sum(self.weights)
        cumulative = [sum(self.weights[: i + 1]) / total for i in range(len(self.weights))]
        while True:
            r = rng.random()
            source = next(i for i, c in enumerate(cumulative) if r <= c)
            yield rng.choice(self.shard_lists[source])

    def _samples(self, shards):
        """(shard, raw sample dict) for every readable sample; shard-level faults are recorded here."""
        for shard in shards:
            last_key = None
            try:
                stream = open_shard(shard)
            except ShardUnreadable as e:
                self.faults.record(F.UNREADABLE_SHARD, shard, None, str(e))
                continue
            completed = False
            try:
                for raw in iter_tar_samples(stream):
                    last_key = raw["__key__"]
                    yield shard, raw
                completed = True
            except TruncatedTar as e:
                self.faults.record(F.TRUNCATED_SHARD, shard, last_key, str(e))
            except (ShardUnreadable, OSError) as e:
                self.faults.record(F.UNREADABLE_SHARD, shard, last_key, str(e))
            finally:
                # Only a stream read to its end is checked on close (a pipe stopped early dies of SIGPIPE).
                try:
                    stream.close()
                except (ShardUnreadable, OSError) as e:
                    if completed:
                        self.faults.record(F.UNREADABLE_SHARD, shard, last_key, str(e))


def _buffer_shuffle(items, size: int, rng: random.Random):
    """Reservoir-style shuffle: fill a buffer, then emit a random element for each new one."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer
