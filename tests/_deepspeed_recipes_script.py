"""LiT and distillation under Lightning's DeepSpeedStrategy on the CPU (one process, gloo), ZeRO-2 and -3.

`python tests/_deepspeed_recipes_script.py <out.json> <stage>...`: for each stage, two fits of the default
tiny CLIP on the same random batches:
- `lit`: the image tower locked whole (`lock_image: {unlocked_groups: 0}`): its weights before and after
  (gathered under ZeRO-3) and the text tower's, to show which trained;
- `distill`: with a frozen teacher (another tiny CLIP), every step's total and distillation loss.
The same two fits run without DeepSpeed (`reference`), so the test can compare step for step.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from cliplab.lit.module import CLIPModule
from cliplab.lit.teacher import Teacher
from cliplab.models.build import build_clip
from tests import _deepspeed_ckpt_script as ds  # the CPU strategy (the test sets DS_ACCELERATOR=cpu)


class Losses(pl.Callback):
    def __init__(self):
        self.total, self.distill = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.total.append(float(outputs["loss"]))
        if "train/distill_loss" in trainer.callback_metrics:
            self.distill.append(float(trainer.callback_metrics["train/distill_loss"]))


def module_for(recipe: str) -> CLIPModule:
    module = _unbuilt(recipe)
    # Built now, from the seed: the strategies draw random numbers differently before configure_model,
    # and the comparison needs the same initial weights on every side.
    torch.manual_seed(0)
    module.configure_model()
    return module


def _unbuilt(recipe: str) -> CLIPModule:
    base = ds.tiny_module()
    model = dict(base.hparams.model)
    if recipe == "lit":
        return CLIPModule(model={**model, "lock_image": {"unlocked_groups": 0}}, loss=base.hparams.loss,
                          optim=dict(base.hparams.optim))  # fmt: skip
    module = CLIPModule(model=model, loss=base.hparams.loss, optim=dict(base.hparams.optim),
                        distill={"teacher": {"ckpt_path": "in-memory"}, "weight": 1.0})  # fmt: skip
    torch.manual_seed(1)  # a teacher unlike the student
    module.teacher = Teacher(build_clip(model))
    return module


def weights(module: CLIPModule) -> dict[str, list[float]]:
    """Sums of each tower's weights (gathered under ZeRO-3): enough to tell changed from bit-identical."""
    state = ds.gathered_weights(module)
    return {
        tower: float(sum(v.double().sum() for k, v in state.items() if k.startswith(prefix)))
        for tower, prefix in (("image", "visual."), ("text", "text."))
    }


def fit(recipe: str, stage: int | None) -> dict:
    pl.seed_everything(0)
    module = module_for(recipe)
    losses = Losses()
    strategy = (
        ds.CPUDeepSpeedStrategy(
            stage=stage, process_group_backend="gloo", logging_batch_size_per_gpu=ds.BATCH
        )
        if stage
        else "auto"
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, precision="32-true", max_steps=ds.STEPS,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[losses],
    )  # fmt: skip
    before = {}

    class Before(pl.Callback):
        def on_train_start(self, trainer, module):
            before.update(weights(module))

    trainer.callbacks.append(Before())
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(ds.batches(module), batch_size=None))
    return {"before": before, "after": weights(module), "loss": losses.total, "distill": losses.distill}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    result = {"reference": {recipe: fit(recipe, None) for recipe in ("lit", "distill")}}
    for stage in sys.argv[2:]:
        result[f"stage{stage}"] = {recipe: fit(recipe, int(stage)) for recipe in ("lit", "distill")}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
