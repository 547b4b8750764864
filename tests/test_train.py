"""Training end to end on tiny data: it learns, saves, and resumes exactly."""

import json

import pytest
import torch

from cliplab.pipeline import train

TINY = [
    "data=emoji",  # the emoji set alone: built in a minute (the default mix takes five)
    "evals=[emoji,emoji_group]",
    "logger=csv",
    "trainer=cpu",
    "trainer.precision=32-true",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def test_fast_dev_run_writes_config(cfg_factory, emoji_ready, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cliplab.models.tokenizer import CLIPTokenizer

    built = []
    original_init = CLIPTokenizer.__init__
    monkeypatch.setattr(
        CLIPTokenizer, "__init__", lambda self, *a, **k: built.append(original_init(self, *a, **k))
    )
    cfg = cfg_factory([*TINY, "debug=fast"])
    train(cfg)
    saved = (tmp_path / "config.yaml").read_text()
    assert "${" not in saved, "the saved config must be resolved"
    # one tokenizer per run: the module's, which the data module and the zero-shot callback use
    assert len(built) == 1
    model = OmegaConf.create(saved).model
    assert model.tokenizer.context_length == model.context_length and "tokenizer" not in model.text_tower


def nominal_flops_per_sample(cfg) -> float:
    from omegaconf import OmegaConf

    from cliplab.models.flops import train_flops_per_sample

    return train_flops_per_sample(OmegaConf.to_container(cfg.model, resolve=True))


def test_run_saves_checkpoints_metrics_and_results(cfg_factory, emoji_ready, tmp_path):
    cfg = cfg_factory([*TINY, "trainer.max_epochs=2"])
    metrics = train(cfg)
    # keep-last-1 by step (the final step) + best-1 by val/loss + last.ckpt (a link to the newest)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert len(ckpts) == 3 and ckpts[1:] == ["last.ckpt", "step_00000008.ckpt"], ckpts
    assert ckpts[0].startswith("best_step_")
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve().name == "step_00000008.ckpt"
    assert json.loads((tmp_path / "metrics.json").read_text())["train/loss"] == pytest.approx(
        metrics["train/loss"]
    )
    assert (tmp_path / "results.md").is_file()
    # the pictures beside it: per-class zero-shot of each entry and the validation retrieval sheet
    pictures = (
        "per_class_emoji.png",
        "per_class_emoji_group.png",
        "retrieval_sheet_retrieval_val.png",
        "loss_curves.png",
    )
    for name in pictures:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in (
            tmp_path / "results.md"
        ).read_text()
    assert any(k.startswith("zeroshot/") for k in metrics)
    # cliplab's own checkpoints need nothing beyond tensors and plain containers
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["config"]["model"]["embed_dim"] == cfg.model.embed_dim
    assert state["samples_seen"] == 2 * 4 * 16
    # emoji captions are far shorter than the context: trimmed batches did less than the nominal FLOPs
    flops_seen = next(v["flops_seen"] for k, v in state["callbacks"].items() if "ClipThroughputMonitor" in k)
    assert 0 < flops_seen < metrics["train/samples_seen"] * nominal_flops_per_sample(cfg)


def test_resume_continues_exactly(cfg_factory, emoji_ready, tmp_path):
    """2 epochs straight == 1 epoch, stop, resume from last.ckpt for the second.

    The warm-up spans the stop (6 steps, 4 per epoch), so a scheduler that was not restored would show;
    a step-count-independent schedule keeps the 1-epoch run's schedule equal to the 2-epoch run's.
    """
    # a data worker: its augmentation RNG is seeded per epoch, so epoch 2 is the same in both runs
    common = [*TINY, "evals=none", "test=false", "data.num_workers=1", "callbacks.retrieval=null"]
    common += ["scheduler=constant", "scheduler.warmup=6"]
    straight = train(cfg_factory([*common, "trainer.max_epochs=2"]))
    first = tmp_path / "first"
    cfg = cfg_factory([*common, "trainer.max_epochs=1"])
    cfg.paths.output_dir = str(first)
    cfg.callbacks.model_checkpoint.dirpath = str(first / "checkpoints")
    train(cfg)
    cfg = cfg_factory([*common, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"])
    cfg.paths.output_dir = str(tmp_path / "second")
    cfg.callbacks.model_checkpoint.dirpath = str(tmp_path / "second" / "checkpoints")
    resumed = train(cfg)
    assert resumed["train/loss"] == pytest.approx(straight["train/loss"], rel=1e-5)
    assert resumed["train/samples_seen"] == straight["train/samples_seen"]
    assert resumed["train/flops_seen"] == pytest.approx(straight["train/flops_seen"], rel=1e-9)


def test_feature_cache_training_matches_plain_loss(cfg_factory, emoji_ready):
    """accumulation=feature_cache (chunks of 4) trains exactly like one big-batch CLIP loss."""
    common = [*TINY, "evals=none", "test=false", "trainer.max_epochs=1", "trainer.limit_train_batches=3"]
    common += ["callbacks.retrieval=null", "callbacks.model_checkpoint=null", "trainer.limit_val_batches=0"]
    plain = train(cfg_factory([*common, "loss=clip"]))
    cached = train(
        cfg_factory([*common, "loss=clip", "accumulation=feature_cache", "accumulation.chunk_size=4"])
    )
    assert cached["train/loss"] == pytest.approx(plain["train/loss"], rel=1e-5)
    assert cached["train/logit_scale"] == pytest.approx(plain["train/logit_scale"], rel=1e-6)


def test_checkpoint_round_trip_gives_the_same_outputs(cfg_factory, emoji_ready, tmp_path):
    """Lightning checkpoint -> CLIPModule.load_from_checkpoint (model rebuilt from the stored config)."""
    from cliplab.lit.module import CLIPModule
    from cliplab.pipeline import build_datamodule, build_module
    from tests._tiny import quiet_trainer

    cfg = cfg_factory(["data=emoji", "data.batch_size=16", "data.num_workers=0"])
    module = build_module(cfg)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=build_datamodule(cfg, module.tokenizer))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = CLIPModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=False)
    images = torch.randn(3, 3, cfg.model.image_size, cfg.model.image_size)
    tokens = module.tokenizer(["a red umbrella", "grinning face", ""])
    with torch.no_grad():
        expected, got = module.eval()(images, tokens), loaded.eval()(images, tokens)
    for key in ("image_features", "text_features", "logit_scale"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
