"""Map-style dataset over (image path or URL, caption) pairs, shared by the table and folder sources."""

import torch
from torch.utils.data import Dataset

from cliplab.data import faults as F
from cliplab.data.samples import make_sample
from cliplab.data.seeds import stable_seed

# A bad item is replaced by the next good one, so batches keep their size; give up after this many.
_MAX_SUBSTITUTIONS = 64


def read_bytes(path: str) -> bytes:
    if "://" in path and not path.startswith("file://"):
        import fsspec  # noqa: PLC0415

        with fsspec.open(path, "rb") as f:
            return f.read()
    with open(path.removeprefix("file://"), "rb") as f:
        return f.read()


class ImageCaptionPairs(Dataset):
    """`dataset[i] -> (uint8 array [H, W, 3], caption)`; unreadable items are recorded and substituted."""

    def __init__(self, images: list[str], captions: list, transform, faults: F.FaultLog, origin: str):
        if len(images) != len(captions):
            raise ValueError("images and captions differ in length")
        self.images = list(images)
        self.captions = list(captions)
        self.transform = transform
        self.faults = faults
        self.origin = origin  # the table or folder, reported as the "shard" of a fault

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, generator=None):
        path = self.images[index]
        caption = self.captions[index]
        caption = None if caption is None or caption != caption else str(caption).strip()  # NaN -> None
        try:
            data = read_bytes(path)
        except OSError as e:
            self.faults.record(F.MISSING_IMAGE, self.origin, path, f"{type(e).__name__}: {e}")
            return None
        return make_sample(data, caption, self.transform, self.faults, self.origin, path, generator)

    def __getitem__(self, index):
        """`index`, or `(epoch, index)` from cliplab's training sampler: then the sample's random crop is
        a function of (epoch, index), the same in a resumed run."""
        generator = None
        if isinstance(index, tuple):
            epoch, index = index
            generator = torch.Generator().manual_seed(stable_seed(epoch, index))
        for step in range(min(_MAX_SUBSTITUTIONS, len(self))):
            sample = self.load((index + step) % len(self), generator)
            if sample is not None:
                return sample
        return None
