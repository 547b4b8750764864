"""The frozen teacher of distillation (`conf/distill/`): loaded once, checked against the student, kept
outside the student's module tree.

Not a submodule of the LightningModule on purpose: it is then in no optimizer, no state dict (the student's
checkpoint names it by `distill.teacher.ckpt_path` in its hyperparameters only), no DDP/FSDP wrapping, and
Lightning's `train()` never switches it out of eval mode.
"""

from pathlib import Path

import torch
from torch import nn

from cliplab.models.interop.build import build_clip
from cliplab.utils.errors import CliplabError, ConfigError


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
    return model_cfg.get("image_size"), (model_cfg.get("text_tower") or {}).get("tokenizer")


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
            f"distill: the teacher ({where}) uses another tokenizer than the student's model.text_tower.tokenizer; "
            "the teacher scores the student's tokens, so both need the same tokenizer and context length"
        )


def load_teacher(distill: dict, student_model: dict, allow_unsafe_pickle: bool = False) -> Teacher:
    """The teacher of `distill` (`{"teacher": {"ckpt_path", "model"}}`): a cliplab checkpoint (architecture
    from its hyperparameters), or with `teacher.model` (a named-model config) an OpenAI / open_clip file."""
    teacher_cfg = distill["teacher"]
    path = Path(str(teacher_cfg["ckpt_path"]))
    if not path.exists():
        raise ConfigError(f"distill.teacher.ckpt_path={path} does not exist")
    where = f"distill.teacher.ckpt_path={path}"
    if teacher_cfg.get("model"):
        from cliplab.models.interop import load_openclip_checkpoint

        model_cfg = teacher_cfg["model"]
        check_same_inputs(model_cfg, student_model, where)
        model = build_clip(model_cfg)
        try:
            load_openclip_checkpoint(model, path, allow_unsafe_pickle=allow_unsafe_pickle)
        except CliplabError:
            raise
        except (ValueError, KeyError, RuntimeError) as err:  # layout conversion failures: one line
            message = " ".join(str(err).split())
            raise ConfigError(f"{where} does not fit distill.teacher.model: {message}") from None
        return Teacher(model)
    from cliplab.checkpoints.load import load_checkpoint

    checkpoint = load_checkpoint(path, allow_unsafe_pickle)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise ConfigError(
            f"{where} is not a cliplab checkpoint; for an OpenAI / open_clip file name its architecture too, "
            f"e.g. model@distill.teacher.model=vit_b32"
        )
    check_same_inputs(hparams["model"], student_model, where)
    model = build_clip(hparams["model"])
    state = {
        k.removeprefix("_forward_module.").removeprefix("model."): v
        for k, v in checkpoint["state_dict"].items()
        if k.removeprefix("_forward_module.").startswith("model.")  # the CLIP, not an EMA copy
    }
    model.load_state_dict(state, strict=True)
    return Teacher(model)
