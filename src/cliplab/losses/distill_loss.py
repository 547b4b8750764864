"""Logit distillation from a teacher CLIP (the distillation term of open_clip's DistillClipLoss)."""

import torch
from torch import nn

from cliplab.losses.gather import all_gather_with_grad
from cliplab.utils.precision import at_least_fp32


def _soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's rows against the teacher's softmax, averaged over rows."""
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1).mean()


def _logits(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's image and text rows against every rank's columns (local x global), as ClipLoss."""
    image, text = at_least_fp32(image), at_least_fp32(text)
    all_image, all_text = all_gather_with_grad(image), all_gather_with_grad(text)
    return scale * image @ all_text.T, scale * text @ all_image.T


class DistillLoss(nn.Module):
    """The student's image->text and text->image logits matched to the teacher's softmax, averaged.

    Only logits are compared, so the teacher's embedding width may differ from the student's: what must
    match is the batch (both score the same samples, so both logit matrices are local x global). Teacher
    features carry no gradient; gathered across ranks like the student's (the same `local x global`
    scoring as `ClipLoss`, equal to open_clip's `DistillClipLoss(local_loss=True)`).
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        teacher_image_features: torch.Tensor,
        teacher_text_features: torch.Tensor,
        teacher_logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        # fp32 logits under autocast, for the reason ClipLoss gives
        with torch.autocast(image_features.device.type, enabled=False):
            student = _logits(image_features, text_features, logit_scale)
            teacher = _logits(teacher_image_features, teacher_text_features, teacher_logit_scale)
            return 0.5 * (
                _soft_cross_entropy(teacher[0], student[0]) + _soft_cross_entropy(teacher[1], student[1])
            )
