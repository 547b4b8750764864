"""The Lightning data module: sources from config, transforms, per-device batching, fault accounting.

Built as `instantiate(cfg.data, tokenizer=module.tokenizer)`. `train` / `val` are sources
(`cliplab.data.interface.DataSource`: `WebDatasetSource`, `TableSource`, `FolderSource`) or a plain
string: a path ending in .csv/.tsv/.parquet is a table, anything else a webdataset shard specification.
`batch_size` is the GLOBAL batch; `setup()` divides it by the trainer's world size. Batches are
`(images, tokens)`: float `[B, 3, H, W]` normalised, long `[B, L]` (the raw captions when no tokenizer is
given).

The data module owns the split over ranks (the trainer runs with `use_distributed_sampler=False`):
every rank yields the same number of training and validation batches (docs/contracts.md, "Even
ranks"), and the loaders are torchdata `StatefulDataLoader`s, whose position (each worker's stream
position, or the sampler's) Lightning saves in every checkpoint and restores mid-epoch.
"""

import logging
import multiprocessing
import signal
import warnings

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from cliplab.data import transforms as T
from cliplab.data.even_split import EpochIndexSampler, EvenSplitBatches
from cliplab.data.faults import FaultLog
from cliplab.data.interface import DataSource
from cliplab.data.samples import Collate
from cliplab.data.table_source import TABLE_SUFFIXES, TableSource
from cliplab.data.webdataset_source import EvenSplitStream, WebDatasetSource
from cliplab.utils.dist import dist_info

log = logging.getLogger(__name__)
# torchdata 0.11 calls a torch API that torch deprecated since: nothing for users to act on.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def as_source(spec, shuffle: bool) -> DataSource | None:
    if spec is None or isinstance(spec, DataSource):
        return spec
    if isinstance(spec, str) and spec.lower().endswith(TABLE_SUFFIXES):
        return TableSource(spec)
    return WebDatasetSource(spec, shuffle=shuffle)


class EpochDataLoader(StatefulDataLoader):
    """Tells an iterable dataset which epoch starts, before the workers take their copy of it.

    Epochs count from `first_epoch`, which a resumed run restores (CLIPDataModule.load_state_dict), so
    epoch k of a resumed run streams what epoch k of an uninterrupted run streams; the position within
    the epoch is the StatefulDataLoader's state, which Lightning checkpoints.
    """

    def __init__(self, *args, first_epoch: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_epoch = first_epoch

    def state_dict(self) -> dict:
        """Every rank's position: Lightning saves the checkpoint from rank 0, and each rank resumes its own.
        Called on every rank alike (Lightning builds the checkpoint dict on all ranks)."""
        state = super().state_dict()
        info = dist_info()
        if not info.distributed:
            return state
        states = [None] * info.world_size
        torch.distributed.all_gather_object(states, state)
        return {"per_rank": states}

    def load_state_dict(self, state: dict) -> None:
        if "per_rank" in state:
            info = dist_info()
            rank, world = info.rank, info.world_size
            if len(state["per_rank"]) != world:
                # Lightning still counts the epoch's batches already done: the epoch ends after the rest
                log.warning(
                    "the checkpoint holds the data positions of %d ranks, this run has %d: the rest of the "
                    "interrupted epoch is read from that epoch's beginning (samples seen before the interruption "
                    "repeat, the epoch's last ones are left out)",
                    len(state["per_rank"]),
                    world,
                )
                return
            state = state["per_rank"][rank]
        super().load_state_dict(state)

    def forget_position(self) -> None:
        """Start the next iteration at the beginning of its epoch, whatever position was loaded."""
        self.next_iter_state, self._iterator = None, None
        if hasattr(self.dataset, "forget_position"):
            self.dataset.forget_position()

    def __iter__(self):
        if hasattr(self.dataset, "set_epoch") and isinstance(self.dataset, IterableDataset):
            self.dataset.set_epoch(self.next_epoch)
            self.next_epoch += 1
        return super().__iter__()


def _outlive_sigterm(worker_id: int) -> None:
    """A loader worker ignores SIGTERM. A scheduler signals every process of a job, and the ranks stop at
    the first batch end after they agree on it (cliplab.callbacks.preemption), so they may fetch another
    batch: a worker gone by then would fail the main process ("worker exited unexpectedly") before it
    saves its checkpoint. Workers still end with the run: the loader stops them, and torch's watchdog
    ends a worker whose parent has died."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class CLIPDataModule(pl.LightningDataModule):
    def __init__(
        self,
        train=None,
        val=None,
        batch_size: int = 256,
        num_workers: int = 4,
        image_size: int = 224,
        mean=T.CLIP_MEAN,
        std=T.CLIP_STD,
        tokenizer=None,
        train_transform=None,
        val_transform=None,
        val_batch_size: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        fault_dir: str | None = None,
        seed: int = 0,
        trim_padding: bool = True,
        worker_start: str = "forkserver",
    ):
        super().__init__()
        # How loader workers start. Not "fork": forking a process that runs other threads (gloo's, the
        # logger's, the progress bar's) can leave the child blocked for ever on a lock one of them held;
        # seen as 2-rank runs whose worker hung in CPython's after-fork thread clean-up. "forkserver"
        # forks from a clean single-threaded server, once per loader (workers persist).
        self.worker_start = worker_start
        # Batches carry tokens only up to their longest caption (exact: see samples.trim_padding).
        self.trim_padding = bool(trim_padding)
        self.train_source = as_source(train, shuffle=True)
        self.val_source = as_source(val, shuffle=False)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size) if val_batch_size else None
        self.num_workers = int(num_workers)
        self.tokenizer = tokenizer
        self.train_transform = train_transform or T.train_transform(image_size, mean, std)
        self.val_transform = val_transform or T.eval_transform(image_size, mean, std)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.faults = FaultLog(fault_dir)
        self.seed = int(seed)
        self.train_dataset = None
        self.val_dataset = None
        self.per_device_batch_size = None
        self.first_epoch = 0  # restored from a checkpoint when resuming
        self.rank, self.world_size = 0, 1

    # ---- setup -------------------------------------------------------------------------------------
    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        info = dist_info()
        return info.rank, info.world_size

    def setup(self, stage: str | None = None) -> None:
        rank, world = self._rank_and_world()
        self.faults = self.faults.for_rank(rank)  # ranks share fault_dir; each owns its rank<r> subdirectory
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} (global) is not divisible by {world} devices"
            )
        self.per_device_batch_size = self.batch_size // world
        self.rank, self.world_size = rank, world
        common = {"rank": rank, "world_size": world, "seed": self.seed, "workers": self.num_workers}
        if self.train_source is not None and self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = self.train_source.build(
                self.train_transform,
                self.faults,
                batch_size=self.per_device_batch_size,
                setting="data.train.urls",
                train=True,
                **common,
            )
        if self.val_source is not None and self.val_dataset is None and stage in (None, "fit", "validate"):
            self.val_dataset = self.val_source.build(
                self.val_transform,
                self.faults,
                batch_size=self._val_batch(),
                setting="data.val.urls",
                train=False,
                **common,
            )

    def _val_batch(self) -> int:
        return self.val_batch_size or self.per_device_batch_size or self.batch_size

    # ---- loaders -----------------------------------------------------------------------------------
    def _loader(self, dataset, transform, batch_size: int, train: bool) -> DataLoader:
        workers = self.num_workers
        split = {"batch_size": batch_size, "drop_last": train}
        if isinstance(dataset, EvenSplitStream):
            split = {"batch_size": None}  # the stream yields whole batches
        elif not isinstance(dataset, IterableDataset) and train:
            # Equal counts on every rank: a distributed sampler that drops the remainder, not pads it
            sampler = DistributedSampler(
                dataset, self.world_size, self.rank, shuffle=True, seed=self.seed, drop_last=True
            )
            split["sampler"] = EpochIndexSampler(sampler)
        elif not isinstance(dataset, IterableDataset):
            split = {"batch_sampler": EvenSplitBatches(len(dataset), self.rank, self.world_size, batch_size)}
        if workers > 0 and self.worker_start == "forkserver":
            # The server imports torch and this package once, so a worker starts as a fork of it
            # instead of importing them itself (seconds of CPU each). A no-op once the server runs.
            multiprocessing.set_forkserver_preload([__name__])
        return EpochDataLoader(
            dataset,
            num_workers=workers,
            collate_fn=Collate(transform, self.tokenizer, trim_padding=self.trim_padding),
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            first_epoch=self.first_epoch if train else 0,
            worker_init_fn=_outlive_sigterm if workers > 0 else None,
            multiprocessing_context=self.worker_start if workers > 0 else None,
            **split,
        )

    # ---- resuming ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Saved in every checkpoint: the number of training epochs already streamed."""
        trainer = getattr(self, "trainer", None)
        done = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        return {"epochs_streamed": int(done)}

    def load_state_dict(self, state: dict) -> None:
        self.first_epoch = int(state.get("epochs_streamed", 0))

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        if self.train_dataset is None:
            raise ValueError("no training data configured: set data.train")
        return self._loader(self.train_dataset, self.train_transform, self.per_device_batch_size, train=True)

    def val_dataloader(self):
        if self.val_dataset is None and self.val_source is not None:
            self.setup("validate")
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, self.val_transform, self._val_batch(), train=False)

    # ---- accounting --------------------------------------------------------------------------------
    def fault_summary(self) -> dict[str, int]:
        """Skipped data so far (all workers of this rank): counts by kind, plus totals
        `skipped_samples` and `skipped_shards`."""
        return self.faults.summary()

    def fault_records(self) -> list[dict]:
        """Every skipped sample or shard so far: dicts with kind, shard, key, detail."""
        return self.faults.records()

    @property
    def samples_per_epoch(self) -> int | None:
        """Training samples per epoch over all ranks, when known: batches per rank x global batch."""
        dataset = self.train_dataset
        if dataset is None or self.per_device_batch_size is None:
            return None
        if isinstance(dataset, IterableDataset):
            try:
                return len(dataset) * self.world_size
            except TypeError:
                return None
        per_rank = len(dataset) // self.world_size // self.per_device_batch_size
        return per_rank * self.batch_size
