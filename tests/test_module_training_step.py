"""CLIPModule's step plumbing: fused AdamW by default, gradients freed before the forward, lazy FLOPs."""

import pytorch_lightning as pl

from cliplab.callbacks.throughput import ClipThroughputMonitor
from cliplab.lit.module import CLIPModule
from tests._tiny import LOSS, MODEL, quiet_trainer, tiny_loader


def _module(**optim) -> CLIPModule:
    module = CLIPModule(model=MODEL, loss=LOSS, optim={"_target_": "torch.optim.AdamW", "lr": 1e-3, **optim})
    module.configure_model()
    return module


def test_adamw_is_fused_unless_the_config_chooses():
    assert _module().configure_optimizers().defaults["fused"] is True
    chosen = _module(foreach=True).configure_optimizers().defaults
    assert chosen["foreach"] is True and not chosen["fused"]


def fit_three_steps(module: CLIPModule, token_length: int = 8) -> pl.Trainer:
    """Three steps on CPU, quiet, with the throughput monitor (it reads flops_per_batch)."""
    trainer = quiet_trainer(max_steps=3, callbacks=[ClipThroughputMonitor(peak_flops=1e9, window_size=2)])
    trainer.fit(module, train_dataloaders=tiny_loader(token_length))
    return trainer


def test_last_steps_gradients_are_gone_before_the_forward():
    module = _module()
    seen = []
    original = module.training_step

    def training_step(batch, batch_idx):
        seen.append(all(p.grad is None for p in module.parameters()))
        return original(batch, batch_idx)

    module.training_step = training_step
    fit_three_steps(module)
    assert seen == [True, True, True]
    assert module.flops_per_batch > 0  # counted on demand, for the last batch's size
