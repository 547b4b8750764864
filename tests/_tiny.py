"""The tiny CLIP, its batches and the quiet CPU trainer that many tests fit: one definition of each.

The model is small enough for a few CPU steps in a second (one ViT block, one text block, width 32);
tests that want another size override a key (`{**TEXT, "layers": 2}`) rather than write the dict again.
"""

import pytorch_lightning as pl
import torch

EMBED, IMAGE_SIZE, CONTEXT, VOCAB = 16, 32, 8, 64
TEXT = {
    "_target_": "cliplab.models.text_tower.CLIPTextTower",
    "embed_dim": EMBED,
    "context_length": CONTEXT,
    "vocab_size": VOCAB,
    "width": 32,
    "layers": 1,
    "heads": 2,
}
VIT = {
    "_target_": "cliplab.models.image_tower.TimmImageTower",
    "model_name": "vit_base_patch16_clip_224",
    "embed_dim": EMBED,
    "image_size": IMAGE_SIZE,
    "width": 32,
    "depth": 1,
    "num_heads": 2,
}
MODEL = {
    "_target_": "cliplab.models.clip.CLIP",
    "embed_dim": EMBED,
    "image_size": IMAGE_SIZE,
    "context_length": CONTEXT,
    "image_tower": VIT,
    "text_tower": TEXT,
}
LOSS = {"_target_": "cliplab.losses.ClipLoss"}
# What a test's trainer leaves out: nothing is logged, saved, drawn or summarised.
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def quiet_trainer(**options) -> pl.Trainer:
    """A CPU Trainer that only fits; `options` add the run's limits and callbacks (or override QUIET)."""
    return pl.Trainer(**{"accelerator": "cpu", **QUIET, **options})


class TinyBatches(torch.utils.data.Dataset):
    """Three seeded batches of 4 images (32 px) and captions of `token_length` ids below VOCAB - 1."""

    def __init__(self, token_length: int = CONTEXT):
        self.token_length = token_length

    def __len__(self):
        return 3

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        tokens = torch.randint(1, VOCAB - 1, (4, self.token_length), generator=gen)
        return torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), tokens


def tiny_loader(token_length: int = CONTEXT) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(TinyBatches(token_length), batch_size=None)
