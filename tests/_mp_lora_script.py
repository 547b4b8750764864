"""LoRA under DDP and FSDP2: run under torchrun (2 CPU processes, gloo).

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_lora_script.py <out_dir>`

For each strategy, one epoch of the tiny CLIP of `_mp_train_script` with `conf/lora/default.yaml`; rank 0
writes `<out_dir>/result.json`: per-step losses, whether every base weight is bit-identical to its value
at the start of training, and whether the adapters changed.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import full, mp_trainer, write_on_rank0
from _mp_train_script import LOSS, MODEL, OPTIM, Data
from omegaconf import OmegaConf

from cliplab.lit.module import CLIPModule

LORA = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "lora" / "default.yaml"))
# inside the clamp: a frozen temperature must not move
LORA_MODEL = {**MODEL, "init_logit_scale": 2.6592600369327779}


def _full_state(module) -> dict:
    return {name: full(value) for name, value in module.model.state_dict().items()}


class Watch(pl.Callback):
    def __init__(self):
        self.losses, self.start, self.end = [], None, None

    def on_train_start(self, trainer, module):
        self.start = _full_state(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, module):
        self.end = _full_state(module)


def fit(name: str, out: Path) -> dict:
    pl.seed_everything(0)
    watch = Watch()
    module = CLIPModule(model=LORA_MODEL, loss=LOSS, optim=OPTIM, scheduler=None, lora=LORA)
    trainer = mp_trainer(name, out, [watch], max_epochs=1)
    trainer.fit(module, datamodule=Data())
    base = [k for k in watch.start if ".lora_" not in k]
    adapters = [k for k in watch.start if "lora_B" in k]
    return {
        "losses": watch.losses,
        "base_unchanged": all(torch.equal(watch.start[k], watch.end[k]) for k in base),
        "adapters_changed": all(not torch.equal(watch.start[k], watch.end[k]) for k in adapters),
        "n_adapters": len(adapters),
        "trainable": sorted(n for n, p in module.model.named_parameters() if p.requires_grad),
    }


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    result = {name: fit(name, out / name) for name in ("ddp", "fsdp")}
    write_on_rank0(out / "result.json", result)


if __name__ == "__main__":
    main()
