"""Image features of a labelled image set, extracted once, split over ranks, gathered in dataset order."""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from cliplab.eval.benchmarks import BenchmarkError
from cliplab.eval.lockstep import Lockstep, blank_images
from cliplab.losses.gather import gather_rows


def rank_share(length: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The items of `rank`: whole batches of `batch_size`, dealt round robin (batch j to rank j % world).

    Every batch holds the same images as in a one-process run, so the features are bitwise the same on
    any number of ranks (kernels can round differently when a batch holds other images)."""
    starts = range(rank * batch_size, length, world_size * batch_size)
    return [i for start in starts for i in range(start, min(start + batch_size, length))]


def _collate_indexed(batch):
    """`[(index, (image | None, label))]` -> (indices, images | None, labels) of the readable images."""
    kept = [(i, img, label) for i, (img, label) in batch if img is not None]
    if not kept:
        return torch.empty(0, dtype=torch.long), None, torch.empty(0, dtype=torch.long)
    indices, images, labels = zip(*kept, strict=True)
    return torch.tensor(indices), torch.stack(images), torch.tensor(labels)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return i, self.dataset[i]


@torch.no_grad()
def extract_features(
    model, dataset, rank: int = 0, world_size: int = 1, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(indices, features [N, E] normalised float32 on CPU, labels)` of every readable image of `dataset`
    (`(image | None, label)` items), sorted by index: the same on every rank and for any world size.

    Each rank encodes its `rank_share` of the batches; every rank then holds all features (gathered)."""
    param = next(model.parameters())
    shard = Subset(_Indexed(dataset), rank_share(len(dataset), batch_size, rank, world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_indexed)
    lockstep = Lockstep(model, len(loader), lambda: model.encode_image(blank_images(model, param.dtype)))
    parts_i, parts_f, parts_y = [], [], []
    for indices, images, labels in loader:
        if images is None:
            lockstep.skipped()
            continue
        features = model.encode_image(images.to(param.device, param.dtype))
        parts_i.append(indices.to(param.device))
        parts_f.append(F.normalize(features.float(), dim=-1))
        parts_y.append(labels.to(param.device))
    lockstep.finish()
    width = getattr(model, "embed_dim", None) or (parts_f[0].shape[1] if parts_f else 0)
    local_i = torch.cat(parts_i) if parts_i else torch.empty(0, dtype=torch.long, device=param.device)
    local_f = torch.cat(parts_f) if parts_f else torch.empty(0, width, device=param.device)
    local_y = torch.cat(parts_y) if parts_y else torch.empty(0, dtype=torch.long, device=param.device)
    indices, features, labels = gather_rows(local_i), gather_rows(local_f), gather_rows(local_y)
    if indices.numel() == 0:  # the same on every rank: after the gather
        raise BenchmarkError(f"none of the {len(dataset)} images could be read")
    order = torch.argsort(indices)
    return indices[order].cpu(), features[order].cpu(), labels[order].cpu()
