"""Writes a real DeepSpeed ZeRO checkpoint folder of the default tiny cliplab CLIP, on the CPU, in one process.

`python tests/_deepspeed_ckpt_script.py <out_dir> <stage>...` (ZeRO stages, e.g. `2 3`): for each stage,
Lightning's own `DeepSpeedStrategy` trains 2 steps on random data and `trainer.save_checkpoint` writes the
folder `<out_dir>/stage<n>/checkpoints/deepspeed.ckpt` (`deepspeed_engine.save_checkpoint` with Lightning's
checkpoint keys as `client_state`, tag `checkpoint`); `<out_dir>/stage<n>/reference.pt` holds the trained
weights as the engine holds them (ZeRO-3 partitions gathered), the step and the module's hyperparameters.

Lightning refuses DeepSpeed without CUDA in `setup_environment`; DeepSpeed itself runs on the CPU
(`DS_ACCELERATOR=cpu`, gloo). So the strategy here is Lightning's with that check left out (and the CPU
devices numbered, as DeepSpeed checks device index = local rank).
"""

import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported: no CUDA probing

import deepspeed  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy  # noqa: E402

from cliplab.lit.module import CLIPModule  # noqa: E402

# DeepSpeed's CPU backend compiles a shared-memory all-reduce (an inference fast path, a minute of C++ on
# two cores) when its communication starts; checkpoints never use it, and without it gloo does the work.
# (`deepspeed.comm.torch` as an attribute is the torch package itself, hence the import by name.)
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

CONF = Path(__file__).resolve().parents[1] / "conf"
STEPS, BATCH = 2, 4


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy less its CUDA-only check: everything else (engine set-up, the
    checkpoint layout) is Lightning's."""

    def setup_environment(self) -> None:
        # DeepSpeed wants each process's device index to be its local rank; CPU devices have no index
        self.parallel_devices = [torch.device("cpu", i) for i in range(len(self.parallel_devices))]
        DDPStrategy.setup_environment(self)


def tiny_module() -> CLIPModule:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none"])
    return CLIPModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        optim={"_target_": "torch.optim.AdamW", "lr": 1e-3},
    )


def batches(module: CLIPModule) -> list:
    size, context = module.hparams.model["image_size"], module.hparams.model["context_length"]
    gen = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH, 3, size, size, generator=gen),
            torch.randint(1, 100, (BATCH, context), generator=gen),
        )
        for _ in range(STEPS)
    ]


def gathered_weights(module: CLIPModule) -> dict:
    params = list(module.model.parameters())
    with deepspeed.zero.GatheredParameters(params):  # a no-op below ZeRO-3
        return {name: value.detach().clone() for name, value in module.model.state_dict().items()}


def write(out: Path, stage: int) -> None:
    pl.seed_everything(0)
    module = tiny_module()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=CPUDeepSpeedStrategy(
            stage=stage, process_group_backend="gloo", logging_batch_size_per_gpu=BATCH
        ),
        precision="32-true",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    loader = torch.utils.data.DataLoader(batches(module), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(out / "checkpoints" / "deepspeed.ckpt")
    reference = {"global_step": trainer.global_step, "hparams": dict(module.hparams)}
    torch.save({**reference, "weights": gathered_weights(module)}, out / "reference.pt")


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    for stage in sys.argv[2:]:  # one process group for all: deepspeed starts it once
        write(out / f"stage{stage}", int(stage))


if __name__ == "__main__":
    main()
