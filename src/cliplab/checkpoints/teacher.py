"""Reads the teacher of distillation (`distill.teacher.ckpt_path`) at start-up: a cliplab checkpoint, or an
OpenAI / open_clip file with its architecture named; checked against the student before any training."""

from pathlib import Path

from cliplab.checkpoints.load import load_checkpoint
from cliplab.lit.teacher import Teacher, check_same_inputs
from cliplab.models.build import build_clip, named_model_config
from cliplab.utils.errors import CliplabError, ConfigError


def load_teacher(distill: dict, student_model: dict, allow_unsafe_pickle: bool = False) -> Teacher:
    """The teacher of `distill` (`{"teacher": {"ckpt_path", "model"}}`): a cliplab checkpoint (architecture
    from its hyperparameters), or with `teacher.model` (a named model, e.g. "vit_b32", or its config) an OpenAI / open_clip file."""
    teacher_cfg = distill["teacher"]
    path = Path(str(teacher_cfg["ckpt_path"]))
    if not path.exists():
        raise ConfigError(f"distill.teacher.ckpt_path={path} does not exist")
    where = f"distill.teacher.ckpt_path={path}"
    if teacher_cfg.get("model"):
        from cliplab.models.interop import load_openclip_checkpoint

        model_cfg = teacher_cfg["model"]
        if isinstance(model_cfg, str):  # distill.teacher.model=vit_b32: a named model
            model_cfg = named_model_config(model_cfg)
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
    checkpoint = load_checkpoint(path, allow_unsafe_pickle)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise ConfigError(
            f"{where} is not a cliplab checkpoint; for an OpenAI / open_clip file name its architecture too, "
            f"e.g. distill.teacher.model=vit_b32"
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
