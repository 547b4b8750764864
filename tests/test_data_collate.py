"""The collate writes normalised images straight into the batch: same values as normalising a stacked batch."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliplab.data.samples import Collate
from cliplab.data.transforms import train_transform


def samples(n=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), f"caption {i}") for i in range(n)]


def test_collate_equals_normalising_the_stacked_batch():
    transform = train_transform(16)
    batch = samples()
    images, captions = Collate(transform)(batch + [None])
    expected = transform.normalize(torch.from_numpy(np.stack([a for a, _ in batch])))
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.float32 and images.is_contiguous()
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert captions == [c for _, c in batch]


def test_read_only_arrays_are_accepted():
    array, caption = samples(1)[0]
    array.setflags(write=False)
    images, _ = Collate(train_transform(16))([(array, caption)])
    assert images.shape == (1, 3, 16, 16)


class SharedCheck(Collate):
    def __call__(self, batch):
        images, captions = super().__call__(batch)
        return images, images.is_shared()


def test_worker_batches_are_built_in_shared_memory():
    # default_collate does the same: the batch then travels to the main process without another copy.
    loader = DataLoader(samples(4), batch_size=2, num_workers=1, collate_fn=SharedCheck(train_transform(16)))
    assert [shared for _, shared in loader] == [True, True]
    assert SharedCheck(train_transform(16))(samples(2))[1] is False  # main process: plain memory
