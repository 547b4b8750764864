"""Symmetric InfoNCE (CLIP) loss over the global batch."""

import torch
import torch.nn.functional as F

from cliplab.losses.gather import all_gather_with_grad, rank_and_world_size
from cliplab.losses.interface import LossModule
from cliplab.utils.precision import at_least_fp32


class ClipLoss(LossModule):
    """Cross-entropy of image->text and text->image logits, averaged.

    Distributed: every rank gathers all ranks' features (with gradient) and scores only its own rows
    against all columns, so logits are `local x global`, never `global x global`; targets sit at
    `rank * local + i`. The returned value is the mean over this rank's rows; its mean over ranks is the
    loss of the concatenated batch, and with DDP's gradient averaging the parameter gradients equal the
    single-process gradients of that batch (the gather's backward sums every rank's contribution).
    All ranks must have the same local batch size.

    `logit_bias` is accepted for interface symmetry and ignored: a constant shift of every logit does
    not change a softmax.
    """

    contrastive = True  # every sample's negatives are the rest of the batch (see cliplab.validate)
    needs_logit_bias = False

    def score(self, image_features, text_features, logit_scale, logit_bias) -> torch.Tensor:
        # Logits in fp32 even under bf16 autocast: early in training cosine similarities differ in the
        # third decimal, below bf16's resolution, and a bf16 loss stays flat at ln(batch).
        with torch.autocast(image_features.device.type, enabled=False):
            image_features, text_features = at_least_fp32(image_features), at_least_fp32(text_features)
            rank, _ = rank_and_world_size()
            all_image = all_gather_with_grad(image_features)
            all_text = all_gather_with_grad(text_features)
            local = image_features.shape[0]
            targets = torch.arange(local, device=image_features.device) + rank * local
            logits_per_image = logit_scale * image_features @ all_text.T
            logits_per_text = logit_scale * text_features @ all_image.T
            return 0.5 * (
                F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)
            )
