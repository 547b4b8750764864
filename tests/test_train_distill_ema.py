"""`python src/train.py ema=default distill=clip ...` end to end: the teacher's term is logged, the average
is evaluated beside the live weights and checkpointed, the teacher is not; a teacher that cannot read the
student's batches stops the run before training, in one line."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from cliplab.models.interop import build_clip
from cliplab.pipeline import train
from cliplab.utils.errors import ConfigError
from tests.test_train import TINY


def _teacher(path, model_cfg: dict) -> None:
    torch.manual_seed(5)
    state = {f"model.{k}": v for k, v in build_clip(model_cfg).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": model_cfg}}, path)


def _overrides(teacher) -> list[str]:
    return [
        *TINY,
        "evals=[emoji]",  # one benchmark, 64 images: it runs twice (live and averaged weights)
        "evals.emoji.benchmark.limit=64",
        "trainer.max_epochs=1",
        "ema=default",
        "distill=clip",
        f"distill.teacher.ckpt_path={teacher}",
    ]


def test_train_with_teacher_and_average(cfg_factory, emoji_ready, tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    cfg = cfg_factory(_overrides(teacher))
    _teacher(teacher, OmegaConf.to_container(cfg.model, resolve=True))  # same inputs, its own weights
    metrics = train(cfg)
    assert metrics["train/distill_loss"] > 0 and "train/contrastive_loss" in metrics
    assert {"zeroshot/emoji/top1", "ema/zeroshot/emoji/top1"} <= set(metrics)
    assert "ema/zeroshot/emoji/top1" in {row["metric"] for row in metrics["results"]}
    # each weights' own per-class picture (taken when each ran: the EMA run reuses the evaluator)
    pictures = json.loads((tmp_path / "results.json").read_text())["pictures"]
    assert {"per_class_emoji.png", "per_class_ema_emoji.png"} <= set(pictures)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert int(state["ema.num_updates"]) == 4 and "ema.weights.logit_scale" in state
    assert all(k.startswith(("model.", "ema.")) for k in state)  # the teacher only by its path


def test_teacher_of_another_image_size_stops_before_training(cfg_factory, tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    cfg = cfg_factory(_overrides(teacher))
    other = OmegaConf.to_container(cfg.model, resolve=True)
    other["image_size"] = other["image_tower"]["image_size"] = 96
    _teacher(teacher, other)
    with pytest.raises(ConfigError, match="same image size") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists()
