"""Trains a very small CLIP with locked towers under DDP and FSDP2 (2 CPU processes, gloo).

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_lock_script.py <out_dir>`

Per strategy two steps and a checkpoint; under FSDP2 (a sharded checkpoint) also a resume for one more step
(the single-process resume is tests/test_locking.py's). Rank 0 writes `<out_dir>/result.json`: per strategy
the losses, the locked and trainable parameter names, which of them changed, and for FSDP2 the names still
locked after the resume and those the resumed step changed.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import full, mp_trainer, write_on_rank0
from _mp_train_script import LOSS, MODEL, dataset
from torch.utils.data import DataLoader, TensorDataset

from cliplab.lit.module import CLIPModule

# Image tower: only the projection trains (every block's FSDP2 unit is locked whole, the tower's own unit
# mixes the locked stem with the trainable projection); text tower: the last block, final LayerNorm and
# projection train (the tower's unit mixes the locked embeddings with the trainable norm and projection).
LOCKED_MODEL = {**MODEL, "lock_image": {"unlocked_groups": 1}, "lock_text": {"unlocked_layers": 2}}
OPTIM = {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.1}


def full_state(module: CLIPModule) -> dict[str, torch.Tensor]:
    """Every parameter in full (a collective under FSDP2: every rank calls it in the same order)."""
    return {name: full(param) for name, param in module.model.named_parameters()}


class Watch(pl.Callback):
    def on_train_start(self, trainer, module):
        self.before = full_state(module)
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, module):
        after = full_state(module)
        self.changed = sorted(n for n in after if not torch.equal(after[n], self.before[n]))
        self.locked = sorted(n for n, p in module.model.named_parameters() if not p.requires_grad)
        self.trainable = sorted(n for n, p in module.model.named_parameters() if p.requires_grad)


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TensorDataset(*dataset().tensors), batch_size=4, shuffle=False)


def fit(name: str, out: Path, steps: int, ckpt_path: str | None = None) -> Watch:
    pl.seed_everything(0)
    watch = Watch()
    module = CLIPModule(model=LOCKED_MODEL, loss=LOSS, optim=OPTIM, scheduler=None)
    trainer = mp_trainer(name, out, [watch], max_steps=steps)
    trainer.fit(module, datamodule=Data(), ckpt_path=ckpt_path)
    if ckpt_path is None:
        trainer.save_checkpoint(str(out / f"{name}.ckpt"))
    return watch


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    result = {}
    for name in ("ddp", "fsdp"):
        straight = fit(name, out, steps=2)
        result[name] = {
            "losses": straight.losses,
            "locked": straight.locked,
            "trainable": straight.trainable,
            "changed": straight.changed,
        }
    resumed = fit("fsdp", out, steps=3, ckpt_path=str(out / "fsdp.ckpt"))
    result["fsdp"].update(resumed_locked=resumed.locked, resumed_changed=resumed.changed)
    write_on_rank0(out / "result.json", result)


if __name__ == "__main__":
    main()
