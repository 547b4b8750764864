"""GPU-only strategies (DeepSpeed in Lightning, FSDP2 with bf16) train the tiny CLIP on one GPU and keep
the temperature clamped."""

import math

import pytest
import torch

pytestmark = pytest.mark.gpu


def _strategy(name: str):
    if name.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
        from pytorch_lightning.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=int(name[-1]))
    from cliplab.lit.sharding import FSDP2Strategy

    return FSDP2Strategy(mixed_precision={"param_dtype": "bfloat16", "reduce_dtype": "float32"})


@pytest.mark.parametrize("image", ["vit", "channels_last_rn"])
@pytest.mark.parametrize("name", ["deepspeed2", "deepspeed3", "fsdp"])
def test_gpu_strategy_trains_and_clamps(name, image, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import _mp_train_script as script
    import pytorch_lightning as pl

    from cliplab.lit.module import CLIPModule

    pl.seed_everything(0)
    record = script.Record()
    model = script.MODEL if image == "vit" else script.CHANNELS_LAST_RN_MODEL
    module = CLIPModule(model=model, loss=script.LOSS, optim=script.OPTIM, scheduler=None)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        strategy=_strategy(name),
        precision="32-true" if name == "fsdp" else "bf16-mixed",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[record],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=script.Data())
    assert len(record.losses) == 2 * script.STEPS_PER_EPOCH * script.WORLD
    assert all(math.isfinite(x) for x in record.losses)
    assert max(record.scales) <= math.log(100.0) + 1e-2  # bf16 rounding of the stored parameter
