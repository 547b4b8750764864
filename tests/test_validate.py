"""Bad configs stop before any heavy work, with one line that says what to change."""

import pytest
import torch

from cliplab.utils.errors import ConfigError
from cliplab.validate import validate


def check(cfg_factory, overrides):
    validate(cfg_factory(overrides))


def test_default_config_is_valid(cfg_factory):
    check(cfg_factory, [])


def test_chunked_checkpointing_config_is_valid(cfg_factory):
    check(cfg_factory, ["model.image_tower.grad_checkpointing=true", "model.image_tower.checkpoint_chunks=4"])


def test_channels_last_resnet_config_is_valid(cfg_factory):
    check(cfg_factory, ["model=rn50"])  # the CLIP ResNet configs default to channels-last


@pytest.mark.parametrize(
    "overrides",
    [
        ["accumulation=feature_cache"],
        ["accumulation=feature_cache", "loss=clip_chunked"],
        ["accumulation=feature_cache", "loss=siglip", "model.init_logit_bias=-10"],
        ["loss=clip_gradcache"],  # the deprecated alias of loss=clip accumulation=feature_cache
    ],
)
def test_feature_cache_accumulation_composes_with_any_contrastive_loss(cfg_factory, overrides):
    check(cfg_factory, overrides)


def test_losses_declare_what_they_are(cfg_factory):
    # the rule reads the loss class's `contrastive` attribute, not its name: a loss that does not couple
    # the batch's samples may accumulate plainly
    check(cfg_factory, ["loss._target_=torch.nn.MSELoss", "trainer.accumulate_grad_batches=4"])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["trainer.max_epochs=ten"], "trainer.max_epochs='ten' must be an integer"),
        (["data.batch_size=1.5"], "data.batch_size"),
        (["optim.lr=fast"], "optim.lr"),
        (["data.batch_size=0"], "must be positive"),
        (["trainer.accumulate_grad_batches=4"], "accumulate_grad_batches=4"),
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3", "data.batch_size=64"],
            "divide across 3",
        ),
        (["loss=siglip"], "model.init_logit_bias"),
        (["loss=siglip", "trainer.accumulate_grad_batches=2"], "use accumulation=feature_cache"),
        (["accumulation=feature_cache", "trainer.accumulate_grad_batches=2"], "accumulate_grad_batches=2"),
        (["accumulation.mode=gradcache"], "accumulation.mode='gradcache' must be one of"),
        (["accumulation=feature_cache", "accumulation.chunk_size=0"], "accumulation.chunk_size=0"),
        (["accumulation=feature_cache", "trainer=deepspeed"], "DeepSpeed's engine runs the backward"),
        (["model.image_tower.checkpoint_chunks=4"], "model.image_tower.grad_checkpointing=true"),
        (["model.text_tower.checkpoint_chunks=0"], "must be a positive integer"),
        (["model.tokenizer.context_length=77"], "model.tokenizer.context_length=77 is longer than"),
        (
            [
                "model/image_tower=timm",
                "model.image_tower.model_name=vit_small_patch16_224",
                "model.image_tower.channels_last=true",
            ],
            "channels_last=true applies to convolutional towers",
        ),
        (
            [
                "trainer=fsdp",
                "model.text_tower.grad_checkpointing=true",
                "model.text_tower.checkpoint_chunks=2",
            ],
            "not supported with sharded blocks",
        ),
    ],
)
def test_bad_config_is_one_clear_line(cfg_factory, overrides, fragment):
    with pytest.raises(ConfigError) as err:
        check(cfg_factory, overrides)
    message = str(err.value)
    assert fragment in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("trainer", ["gpu", "fsdp", "deepspeed"])
def test_gpu_trainers_refuse_cpu_only_machines(cfg_factory, trainer):
    with pytest.raises(ConfigError, match=f"trainer={trainer}|needs|GPU"):
        check(cfg_factory, [f"trainer={trainer}"])


def test_every_missing_value_is_named_with_an_example(cfg_factory):
    from cliplab.utils.missing import example_value

    for overrides, key in (
        (["data=csv"], "data.train.path"),
        (["data=folder"], "data.train.root"),
        (["evals=[folder]"], "evals.folder.benchmark.root"),
        (["evals=[retrieval]"], "evals.retrieval.data.path"),
        (["evals=[linear_probe]"], "evals.linear_probe.root"),
        (["evals=[kshot]"], "evals.kshot.root"),
    ):
        with pytest.raises(ConfigError, match=f"^{key} is required: python src/.*{key}=/data/") as err:
            validate(cfg_factory(overrides))
        assert "\n" not in str(err.value)
        assert example_value(key)  # every `???` in conf/ has an example in a comment


def test_data_csv_without_a_path_is_one_line_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "CLIPLAB_ROOT": str(tmp_path),
        "PYTHONPATH": str(root / "src"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(root / "src" / "train.py"), "data=csv"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.train.path is required: python src/train.py data=csv data.train.path=/data/mine/train.csv"
    ]
    assert "Traceback" not in proc.stdout


def test_mix_data_config_is_valid_and_a_bad_augmentation_stops_it(cfg_factory):
    check(cfg_factory, ["data=mix"])
    with pytest.raises(ConfigError, match="train_transform.invert_p"):
        check(cfg_factory, ["data=mix", "data.train_transform.invert_p=3"])
    with pytest.raises(ConfigError, match="train_transform.dark_background_p"):
        check(cfg_factory, ["data=mix", "data.train_transform.dark_background_p=yes"])
