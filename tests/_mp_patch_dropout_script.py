"""Patch dropout (FLIP) under 2-process DDP and FSDP2 (gloo, CPU); run it under torchrun.

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_patch_dropout_script.py <out.json>`

Three fits of the training scripts' tiny ViT CLIP on the same data: DDP and FSDP2 with half the patches
dropped, and DDP without. Rank 0 writes every step's loss and the image tower's final weights (a sum of
each gathered tensor) per fit.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import full, mp_trainer, write_on_rank0
from _mp_train_script import LOSS, MODEL, OPTIM, Data, Record

from cliplab.lit.module import CLIPModule


def fit(name: str, out: Path, patch_dropout: float) -> dict:
    pl.seed_everything(0)
    model = {**MODEL, "image_tower": {**MODEL["image_tower"], "patch_dropout": patch_dropout}}
    module = CLIPModule(model=model, loss=LOSS, optim=OPTIM, scheduler=None)
    record = Record()
    mp_trainer(name, out, [record], max_epochs=2).fit(module, datamodule=Data())
    weights = [float(full(p).double().sum()) for _, p in sorted(module.model.visual.named_parameters())]
    return {"losses": record.losses, "image_weights": weights}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    result = {
        "ddp": fit("ddp", out.parent, 0.5),
        "fsdp": fit("fsdp", out.parent, 0.5),
        "ddp_no_dropout": fit("ddp", out.parent, 0.0),
    }
    write_on_rank0(out, result)


if __name__ == "__main__":
    main()
