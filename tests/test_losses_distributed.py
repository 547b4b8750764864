"""Two CPU processes (gloo, DDP) give the same loss and parameter gradients as one process on the
concatenated batch, for every gathered loss."""

import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cliplab.losses import ChunkedClipLoss, ClipLoss, SigLipLoss
from cliplab.models.clip import CLIP

WORLD_SIZE = 2
LOCAL_BATCH = 6
IMAGE_IN, TEXT_IN, EMBED = 10, 7, 8

# name -> (loss factory, model has a logit bias)
LOSSES = {
    "clip": (ClipLoss, False),
    "siglip": (SigLipLoss, True),
    # blocks of 4 rows over a local batch of 6: a full and a partial block on every rank
    "clip_chunked": (lambda: ChunkedClipLoss(block_size=4), False),
}


class LinearTower(nn.Linear):
    """A tower that is one linear map: enough to give the loss real parameter gradients."""

    @property
    def output_dim(self) -> int:
        return self.out_features


def _model(with_bias: bool) -> CLIP:
    torch.manual_seed(0)
    model = CLIP(
        LinearTower(IMAGE_IN, EMBED),
        LinearTower(TEXT_IN, EMBED),
        EMBED,
        init_logit_scale=math.log(10.0),
        init_logit_bias=-5.0 if with_bias else None,
    )
    return model.double()


def _batch():
    g = torch.Generator().manual_seed(1)
    n = WORLD_SIZE * LOCAL_BATCH
    return torch.randn(n, IMAGE_IN, generator=g, dtype=torch.float64), torch.randn(
        n, TEXT_IN, generator=g, dtype=torch.float64
    )


def _loss_and_grads(model, loss_fn, images, texts):
    out = model(images, texts)
    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank: int, rendezvous_file: str, result_path: str) -> None:
    # file rendezvous: no TCP port to race for with other test runs on the same machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous_file}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    images, texts = _batch()
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    results = {}
    for name, (make_loss, with_bias) in LOSSES.items():
        model = DistributedDataParallel(_model(with_bias))  # averages gradients over ranks
        loss, grads = _loss_and_grads(model, make_loss(), images[rows], texts[rows])
        dist.all_reduce(loss)
        grads = {key.removeprefix("module."): value for key, value in grads.items()}
        results[name] = (loss / WORLD_SIZE, grads)
    if rank == 0:
        torch.save(results, result_path)
    # leave together: a rank that exits while the other still uses the group makes gloo abort it
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_losses_equal_single_process(tmp_path):
    result_path = str(tmp_path / "results.pt")
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), result_path), nprocs=WORLD_SIZE, join=True)
    results = torch.load(result_path)
    images, texts = _batch()
    for name, (make_loss, with_bias) in LOSSES.items():
        expected_loss, expected_grads = _loss_and_grads(_model(with_bias), make_loss(), images, texts)
        loss, grads = results[name]
        torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0, msg=f"{name} loss")
        assert grads.keys() == expected_grads.keys()
        for key, expected in expected_grads.items():
            torch.testing.assert_close(grads[key], expected, rtol=1e-6, atol=1e-12, msg=f"{name} grad {key}")
