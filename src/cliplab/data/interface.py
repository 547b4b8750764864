"""The contract of a data source, in code (docs/contracts.md, "Data sources").

A source is the config-level description of some image-caption pairs (`data.train`, `data.val`: a
`_target_` config, cheap to build, no files read); `CLIPDataModule.setup` asks it for the dataset of one
rank. Sources name it (`class FolderSource(DataSource)`); `tests/test_contracts.py` builds every
`conf/data/*.yaml` on tiny files and checks it against this.
"""

from typing import Protocol, runtime_checkable

from torch.utils.data import Dataset

from cliplab.data.faults import FaultLog
from cliplab.data.transforms import ClipImageTransform


@runtime_checkable
class DataSource(Protocol):
    def build(
        self,
        transform: ClipImageTransform,
        faults: FaultLog,
        *,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        workers: int = 0,
        seed: int = 0,
        setting: str | None = None,
        train: bool = True,
    ) -> Dataset:
        """This rank's dataset. Either map-style, `dataset[i] -> (uint8 array [H, W, 3], caption)` (the data
        module splits it over ranks with equal counts), or an iterable that yields this rank's whole
        batches of such samples, the same number on every rank (`cliplab.data.webdataset_source`).
        `transform.decode` turns image bytes into the array (random crops when `train`); a pair that cannot
        be read is recorded in `faults` and skipped, never raised. `setting` names the config key in
        start-up errors (`data.train.urls`). Missing files raise at build time, with one line."""
        ...
