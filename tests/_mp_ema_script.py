"""EMA and distillation under two CPU processes (gloo); run it under torchrun.

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_ema_script.py <ddp|fsdp> <out_dir> <teacher.ckpt>`

Fits the tiny model of `_mp_train_script` for one epoch with `ema` and `distill` on, saves a checkpoint, and
resumes it for a second epoch. Every rank writes `<out_dir>/rank<r>.pt`: the full (gathered) live weights
after every optimizer step, the full average when the first fit ended, when the resumed fit started and at
its end, this rank's own (unsharded or shard) copy of the final average, the distillation losses logged,
and whether the teacher kept its weights.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import full, mp_trainer
from _mp_train_script import LOSS, MODEL, OPTIM, Data

from cliplab.checkpoints.teacher import load_teacher
from cliplab.lit.module import CLIPModule

EMA = {"decay": 0.9, "warmup": True}


def _average(module: CLIPModule) -> dict:
    return {k: full(v) for k, v in module.ema.weights.named_parameters()}


class Record(pl.Callback):
    def __init__(self):
        self.live, self.distill, self.at_start = [], [], None

    def on_train_start(self, trainer, module):
        self.at_start = _average(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.live.append({k: full(v) for k, v in module.model.named_parameters()})
        self.distill.append(float(trainer.callback_metrics["train/distill_loss"]))


def fit(name: str, out: Path, teacher: str, epochs: int, ckpt_path: str | None = None):
    pl.seed_everything(0)
    distill = {"teacher": {"ckpt_path": teacher, "model": None}, "weight": 1.0}
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, scheduler=None, ema=EMA, distill=distill)
    module.teacher = load_teacher(distill, MODEL)  # every rank its own full copy
    record = Record()
    trainer = mp_trainer(name, out, [record], max_epochs=epochs)
    trainer.fit(module, datamodule=Data(), ckpt_path=ckpt_path)
    return module, record, trainer


def main() -> None:
    name, out, teacher = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    module, first, trainer = fit(name, out, teacher, epochs=1)
    saved = _average(module)
    trainer.save_checkpoint(str(out / "epoch0.ckpt"))
    resumed, second, _ = fit(name, out, teacher, epochs=2, ckpt_path=str(out / "epoch0.ckpt"))
    reference = torch.load(teacher, weights_only=True)["state_dict"]
    teacher_model = resumed.teacher.model
    result = {
        "live": first.live + second.live,
        "saved": saved,
        "at_start": second.at_start,
        "final": _average(resumed),
        "own": {
            k: v.detach().to_local() if hasattr(v, "to_local") else v.detach()
            for k, v in resumed.ema.weights.named_parameters()
        },
        "num_updates": int(resumed.ema.num_updates),
        "distill": first.distill + second.distill,
        "teacher_unchanged": all(
            torch.equal(v, reference[f"model.{k}"]) for k, v in teacher_model.state_dict().items()
        ),
        "teacher_in_state_dict": any("teacher" in k for k in resumed.state_dict()),
    }
    torch.save(result, out / f"rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main()
