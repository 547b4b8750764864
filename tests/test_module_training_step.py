"""CLIPModule's step plumbing: fused AdamW by default, gradients freed before the forward, lazy FLOPs."""

import pytorch_lightning as pl
import torch

from cliplab.callbacks.throughput import ClipThroughputMonitor
from cliplab.lit.module import CLIPModule

TEXT = {
    "_target_": "cliplab.models.text_tower.CLIPTextTower",
    "embed_dim": 16,
    "context_length": 8,
    "vocab_size": 64,
    "width": 32,
    "layers": 1,
    "heads": 2,
}
IMAGE = {
    "_target_": "cliplab.models.image_tower.TimmImageTower",
    "model_name": "vit_base_patch16_clip_224",
    "embed_dim": 16,
    "image_size": 32,
    "width": 32,
    "depth": 1,
    "num_heads": 2,
}
MODEL = {
    "_target_": "cliplab.models.clip.CLIP",
    "embed_dim": 16,
    "image_size": 32,
    "context_length": 8,
    "image_tower": IMAGE,
    "text_tower": TEXT,
}
LOSS = {"_target_": "cliplab.losses.ClipLoss"}


def _module(**optim) -> CLIPModule:
    module = CLIPModule(model=MODEL, loss=LOSS, optim={"_target_": "torch.optim.AdamW", "lr": 1e-3, **optim})
    module.configure_model()
    return module


def test_adamw_is_fused_unless_the_config_chooses():
    assert _module().configure_optimizers().defaults["fused"] is True
    chosen = _module(foreach=True).configure_optimizers().defaults
    assert chosen["foreach"] is True and not chosen["fused"]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, token_length: int = 8):
        self.token_length = token_length

    def __len__(self):
        return 3

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        tokens = torch.randint(1, 63, (4, self.token_length), generator=gen)
        return torch.randn(4, 3, 32, 32, generator=gen), tokens


def fit_three_steps(module: CLIPModule, token_length: int = 8) -> pl.Trainer:
    """Three steps on CPU, quiet, with the throughput monitor (it reads flops_per_batch)."""
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ClipThroughputMonitor(peak_flops=1e9, window_size=2)],
    )
    trainer.fit(
        module, train_dataloaders=torch.utils.data.DataLoader(_Batches(token_length), batch_size=None)
    )
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
