"""The CLIP model: an image tower and a text tower joined by a learned temperature."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from cliplab.models.locking import lock_model
from cliplab.utils.precision import at_least_fp32

MAX_LOGIT_SCALE = math.log(100.0)


class CLIP(nn.Module):
    """Two towers projecting into one embedding space.

    `logit_scale` is stored in log space (init ln(1/0.07)) and clamped to [0, ln 100] by the training
    module after every optimizer step. `logit_bias` exists only for sigmoid (SigLIP) losses.
    `lock_image` (`{unlocked_groups, freeze_bn_stats}`) / `lock_text` (`{unlocked_layers, freeze_layer_norm}`)
    lock a tower as in LiT (null: it trains; see `cliplab.models.locking`).
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        embed_dim: int,
        init_logit_scale: float = math.log(1 / 0.07),
        init_logit_bias: float | None = None,
        image_size: int | None = None,
        context_length: int | None = None,
        lock_image: dict | None = None,
        lock_text: dict | None = None,
    ):
        super().__init__()
        for name, tower in (("image", image_tower), ("text", text_tower)):
            if getattr(tower, "output_dim", embed_dim) != embed_dim:
                raise ValueError(
                    f"{name} tower outputs {tower.output_dim} features but embed_dim is {embed_dim}"
                )
        self.embed_dim = embed_dim
        # Input shapes the towers were built for (the towers read them from the same config).
        self.image_size = image_size
        self.context_length = context_length
        self.visual = image_tower
        self.text = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        bias = None if init_logit_bias is None else nn.Parameter(torch.tensor(float(init_logit_bias)))
        self.logit_bias = bias
        # LiT (cliplab.models.locking): applied at build time, so a resumed or reloaded model is locked too
        lock_model(self, lock_image, lock_text)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(images)
        # normalised in fp32: under bf16 autocast, nearly parallel features would round together
        return F.normalize(at_least_fp32(features), dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(at_least_fp32(features), dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        return {
            "image_features": self.encode_image(images, normalize=True),
            "text_features": self.encode_text(tokens, normalize=True),
            # The training module clamps the parameter after each step; clamping here too keeps the
            # temperature bounded where a strategy owns the master weights (DeepSpeed's fp32 copy).
            "logit_scale": self.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp(),
            "logit_bias": self.logit_bias,
        }
