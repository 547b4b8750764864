"""The frozen teacher of distillation (`conf/distill/`), kept outside the student's module tree, and the
rule a teacher must meet (`cliplab.checkpoints.teacher.load_teacher` reads one from a file).

Not a submodule of the LightningModule on purpose: it is then in no optimizer, no state dict (the student's
checkpoint names it by `distill.teacher.ckpt_path` in its hyperparameters only), no DDP/FSDP wrapping, and
Lightning's `train()` never switches it out of eval mode.
"""

import torch
from torch import nn

from cliplab.models.build import current_layout
from cliplab.utils.errors import ConfigError


def distill_enabled(distill: dict | None) -> bool:
    """Whether a `distill` config (`conf/distill/`) names a teacher (`distill=none` names none)."""
    return bool(distill) and bool((distill.get("teacher") or {}).get("ckpt_path"))


class Teacher:
    """A CLIP in eval mode without gradients; `__call__(images, tokens)` is its forward under no_grad."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        first = next(self.model.parameters())
        if first.device != images.device:  # follows the student's batches to their device, once
            self.model.to(images.device)
        return self.model(images.to(first.dtype), tokens)


def _inputs(model_cfg: dict) -> tuple:
    """What a model needs its batches to be: image size and the tokenizer that made the tokens."""
    # current_layout: a teacher checkpoint may predate model.tokenizer
    return model_cfg.get("image_size"), current_layout(model_cfg).get("tokenizer")


def check_same_inputs(teacher_cfg: dict, student_cfg: dict, where: str) -> None:
    """The teacher scores the student's batch as it is, so both must read the same images and tokens.
    Embedding widths may differ: only the logits (batch x global batch) are compared."""
    (t_size, t_tok), (s_size, s_tok) = _inputs(teacher_cfg), _inputs(student_cfg)
    if t_size != s_size:
        raise ConfigError(
            f"distill: the teacher ({where}) reads {t_size} px images, the student model.image_size={s_size}; "
            "the teacher scores the student's batches, so both need the same image size"
        )
    if t_tok != s_tok:
        raise ConfigError(
            f"distill: the teacher ({where}) uses another tokenizer than the student's model.tokenizer; "
            "the teacher scores the student's tokens, so both need the same tokenizer and context length"
        )
