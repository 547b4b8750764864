"""Distillation (`conf/distill/`): the loss equals open_clip's DistillClipLoss (one process and two gloo
ranks); the teacher stays frozen, outside the optimizer and the checkpoint; bad teachers stop at start-up."""

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from open_clip.loss import DistillClipLoss

from cliplab.checkpoints.teacher import load_teacher
from cliplab.lit.module import CLIPModule
from cliplab.losses import ClipLoss
from cliplab.losses.distill_loss import DistillLoss
from cliplab.models.interop import build_clip
from cliplab.models.interop.openclip_export import to_openclip_state_dict
from cliplab.utils.errors import ConfigError
from cliplab.validate import validate
from tests._distill_ranks_worker import WORLD, all_features, worker
from tests._mp_train_script import LOSS, MODEL, OPTIM, Data
from tests._tiny import quiet_trainer


def test_loss_equals_open_clip_distill_clip_loss():
    (image, text), scale, (t_image, t_text), t_scale = all_features()
    contrastive, distill = DistillClipLoss()(image, text, scale, t_image, t_text, t_scale)
    torch.testing.assert_close(ClipLoss()(image, text, scale), contrastive, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        DistillLoss()(image, text, scale, t_image, t_text, t_scale), distill, rtol=1e-6, atol=0
    )
    # a teacher that agrees with itself scores lower than a random one: the term measures agreement
    assert DistillLoss()(t_image, t_text, t_scale, t_image, t_text, t_scale) < distill


def test_two_ranks_equal_one_process(tmp_path):
    """Each rank scores its rows against the gathered batch; the mean over ranks is the whole batch's loss
    (open_clip's value, above) and rank-averaged gradients (what DDP applies) are one process's gradients."""
    out = str(tmp_path / "result.pt")
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), out), nprocs=WORLD, join=True)
    result = torch.load(out)
    (image, text), scale, (t_image, t_text), t_scale = all_features()
    image = image.clone().requires_grad_()
    whole = DistillLoss()(image, text, scale, t_image, t_text, t_scale)
    whole.backward()
    theirs = DistillClipLoss()(image.detach(), text, scale, t_image, t_text, t_scale)[1]
    torch.testing.assert_close(result["loss"], whole.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(result["loss"], theirs, rtol=1e-6, atol=0)
    # fp32 sums in another order: an element near zero keeps an error of the gradient's scale times ~1e-7
    scale_atol = 1e-6 * image.grad.abs().max().item()
    torch.testing.assert_close(result["image_grad"] / WORLD, image.grad, rtol=1e-5, atol=scale_atol)


def _teacher_model_cfg() -> dict:
    """Another architecture than the student's (wider embedding and towers), same inputs."""
    cfg = copy.deepcopy(MODEL)
    cfg["embed_dim"] = cfg["image_tower"]["embed_dim"] = cfg["text_tower"]["embed_dim"] = 48
    cfg["image_tower"]["width"] = cfg["text_tower"]["width"] = 32
    return cfg


def _save_cliplab_teacher(path, model_cfg: dict) -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_clip(model_cfg)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": model_cfg}}, path)
    return model


def _quiet_trainer(**kw) -> pl.Trainer:
    return quiet_trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0, **kw)


class _Record(pl.Callback):
    def __init__(self):
        self.distill = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.distill.append(float(trainer.callback_metrics["train/distill_loss"]))


def test_teacher_frozen_outside_optimizer_and_checkpoint(tmp_path):
    path = tmp_path / "teacher.ckpt"
    reference = _save_cliplab_teacher(path, _teacher_model_cfg())
    distill = {"teacher": {"ckpt_path": str(path), "model": None}, "weight": 0.5}
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, distill=distill)
    module.teacher = load_teacher(distill, MODEL)
    teacher = module.teacher.model
    grad_modes = []
    teacher.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    record = _Record()
    _quiet_trainer(callbacks=[record]).fit(module, datamodule=Data())
    assert grad_modes == [False, False]  # the teacher ran once per step, under no_grad
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in reference.state_dict().items():  # untouched by two optimizer steps
        torch.testing.assert_close(teacher.state_dict()[key], value, rtol=0, atol=0)
    optimized = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    assert all(k.startswith("model.") for k in module.state_dict())  # saved by reference only
    assert module.hparams.distill["teacher"]["ckpt_path"] == str(path)
    assert len(record.distill) == 2 and all(v > 0 for v in record.distill)


def test_fitting_without_the_teacher_loaded_says_how(tmp_path):
    distill = {"teacher": {"ckpt_path": str(tmp_path / "teacher.ckpt")}}
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, distill=distill)
    with pytest.raises(ConfigError, match="load_teacher"):
        _quiet_trainer().fit(module, datamodule=Data())


def test_open_clip_file_teacher_through_interop(tmp_path):
    cfg = _teacher_model_cfg()
    torch.manual_seed(4)
    source = build_clip(cfg).eval()
    path = tmp_path / "open_clip_model.pt"
    torch.save(to_openclip_state_dict(source), path)  # open_clip's key layout
    teacher = load_teacher({"teacher": {"ckpt_path": str(path), "model": cfg}}, MODEL)
    images, tokens = Data().train_dataloader().dataset[:3]
    with torch.no_grad():
        expected = source(images, tokens)
    got = teacher(images, tokens)
    torch.testing.assert_close(got["image_features"], expected["image_features"])
    torch.testing.assert_close(got["text_features"], expected["text_features"])


def test_teacher_reading_other_inputs_stops_with_one_line(tmp_path):
    cfg = _teacher_model_cfg()
    cfg["image_size"] = cfg["image_tower"]["image_size"] = 64
    student = {**MODEL, "image_size": 32}
    path = tmp_path / "teacher.ckpt"
    _save_cliplab_teacher(path, cfg)
    with pytest.raises(ConfigError, match="same image size") as err:
        load_teacher({"teacher": {"ckpt_path": str(path)}}, student)
    assert "\n" not in str(err.value)
    tokenizer = {"_target_": "cliplab.models.tokenizer.CLIPTokenizer", "context_length": 16}
    other = {**tokenizer, "context_length": 77}
    with pytest.raises(ConfigError, match="same tokenizer"):
        load_teacher(
            {
                "teacher": {
                    "ckpt_path": str(path),
                    "model": {**cfg, "image_size": 32, "text_tower": {"tokenizer": other}},
                }
            },
            {**student, "text_tower": {"tokenizer": tokenizer}},
        )


def test_open_clip_file_without_architecture_stops_with_one_line(tmp_path):
    path = tmp_path / "open_clip_model.pt"
    torch.save(to_openclip_state_dict(build_clip(MODEL)), path)
    with pytest.raises(ConfigError, match=r"distill.teacher.model=vit_b32") as err:
        load_teacher({"teacher": {"ckpt_path": str(path)}}, MODEL)
    assert "\n" not in str(err.value)


def test_config_rules(cfg_factory, tmp_path):
    assert not cfg_factory([]).distill  # distill=none by default
    with pytest.raises(ConfigError, match="distill.teacher.ckpt_path is required"):
        validate(cfg_factory(["distill=clip"]))
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(ConfigError, match=f"distill.teacher.ckpt_path={missing} does not exist"):
        validate(cfg_factory(["distill=clip", f"distill.teacher.ckpt_path={missing}"]))
    present = tmp_path / "teacher.ckpt"
    present.touch()
    with pytest.raises(ConfigError, match="accumulation=feature_cache"):
        validate(
            cfg_factory(
                ["distill=clip", f"distill.teacher.ckpt_path={present}", "accumulation=feature_cache"]
            )
        )
    with pytest.raises(ConfigError, match="distill.temperature is not an option"):
        validate(
            cfg_factory(["distill=clip", f"distill.teacher.ckpt_path={present}", "+distill.temperature=2"])
        )
    cfg = cfg_factory(["distill=clip", f"distill.teacher.ckpt_path={present}", "distill.teacher.model=rn50"])
    validate(cfg)
    from cliplab.models.build import named_model_config

    assert named_model_config(cfg.distill.teacher.model)["image_tower"]["model_name"] == "resnet50_clip"
    with pytest.raises(ConfigError, match="no named model 'rn51'"):
        validate(
            cfg_factory(
                ["distill=clip", f"distill.teacher.ckpt_path={present}", "distill.teacher.model=rn51"]
            )
        )
