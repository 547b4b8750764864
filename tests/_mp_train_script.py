"""Trains a very small CLIP on in-memory random data; run it under torchrun (2 CPU processes, gloo).

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_train_script.py <ddp|fsdp> <out_dir> [save-only]`

Three fits in one process group: two epochs straight through; two epochs again but stopping after the
first (saving a checkpoint); resuming from that checkpoint for the second epoch. Rank 0 writes
`<out_dir>/result.json` with the per-step losses (rank 0's local loss) and temperatures of each fit.
The same seed, data and model config are used for every strategy, so runs can be compared step by step.
"""

import math
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import WORLD, mp_trainer, write_on_rank0
from torch.utils.data import DataLoader, TensorDataset

from cliplab.lit.module import CLIPModule

IMAGE_SIZE, CONTEXT, VOCAB, EMBED = 32, 16, 1000, 32
LOCAL_BATCH, STEPS_PER_EPOCH = 4, 3
# Above ln(100): the first optimizer step must clamp it.
INIT_LOGIT_SCALE = 4.8

MODEL = {
    "_target_": "cliplab.models.clip.CLIP",
    "embed_dim": EMBED,
    "init_logit_scale": INIT_LOGIT_SCALE,
    "image_tower": {
        "_target_": "cliplab.models.image_tower.TimmImageTower",
        "model_name": "vit_base_patch16_clip_224",
        "embed_dim": EMBED,
        "image_size": IMAGE_SIZE,
        "width": 64,
        "depth": 2,
        "num_heads": 2,
        "pool": "token",
        "proj": "linear",
        "act": "gelu",
    },
    "text_tower": {
        "_target_": "cliplab.models.text_tower.CLIPTextTower",
        "embed_dim": EMBED,
        "context_length": CONTEXT,
        "vocab_size": VOCAB,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "act": "gelu",
    },
}
CHANNELS_LAST_RN = {  # an image tower to swap in: a small CLIP ResNet in NHWC order (the rn* configs' default)
    "_target_": "cliplab.models.image_tower.TimmImageTower",
    "model_name": "resnet50_clip",
    "embed_dim": EMBED,
    "image_size": IMAGE_SIZE,
    "layers": [1, 1, 1, 1],
    "width_factor": 0.25,
    "channels_last": True,
}
CHANNELS_LAST_RN_MODEL = {**MODEL, "image_tower": CHANNELS_LAST_RN}
LOSS = {"_target_": "cliplab.losses.ClipLoss"}
# A large learning rate so the temperature is pushed up against its clamp, not just initialised above it.
OPTIM = {"_target_": "torch.optim.AdamW", "lr": 5e-3, "weight_decay": 0.1}


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    n = LOCAL_BATCH * WORLD * STEPS_PER_EPOCH
    # explicit device: Lightning's DeepSpeed strategy builds the loader under a default-device context
    images = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g, device="cpu")
    tokens = torch.randint(1, VOCAB - 1, (n, CONTEXT), generator=g, device="cpu")
    tokens[:, -1] = VOCAB - 1  # the largest id ends each caption, as EOT does in CLIP's vocabulary
    return TensorDataset(images, tokens)


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        # No shuffling: the distributed sampler Lightning inserts then gives every run the same batches.
        return DataLoader(dataset(), batch_size=LOCAL_BATCH, shuffle=False)


class Record(pl.Callback):
    """Rank 0's loss and the (full) temperature after every optimizer step."""

    def __init__(self):
        self.losses, self.scales = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        param = module.model.logit_scale
        if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3 keeps only a partition between steps
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                scale = param.detach().clone()
        else:
            scale = param.detach()
        if hasattr(scale, "full_tensor"):  # a DTensor under FSDP2
            scale = scale.full_tensor()
        self.losses.append(float(outputs["loss"]))
        self.scales.append(float(scale))


def fit(name: str, out: Path, epochs: int, ckpt_path: str | None = None) -> Record:
    pl.seed_everything(0)
    record = Record()
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, scheduler=None)
    trainer = mp_trainer(name, out, [record], max_epochs=epochs)
    trainer.fit(module, datamodule=Data(), ckpt_path=ckpt_path)
    if ckpt_path is None and epochs == 1:
        trainer.save_checkpoint(str(out / "epoch0.ckpt"))
    return record


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    if sys.argv[3:] == ["save-only"]:  # only the one-epoch fit and its checkpoint (`epoch0.ckpt`)
        fit(name, out, epochs=1)
        return
    straight = fit(name, out, epochs=2)
    first = fit(name, out, epochs=1)
    resumed = fit(name, out, epochs=2, ckpt_path=str(out / "epoch0.ckpt"))
    result = {
        "straight": {"losses": straight.losses, "scales": straight.scales},
        "first": {"losses": first.losses, "scales": first.scales},
        "resumed": {"losses": resumed.losses, "scales": resumed.scales},
        "max_logit_scale": math.log(100.0),
        "checkpoint_is_dir": (out / "epoch0.ckpt").is_dir(),
    }
    write_on_rank0(out / "result.json", result)


if __name__ == "__main__":
    main()
