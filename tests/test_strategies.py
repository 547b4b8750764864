"""Scaling strategies: FSDP2 sharding of a CLIP model (one process, gloo), trainer and cluster presets."""

import math

import pytest
import torch
import torch.distributed as dist
from hydra.utils import instantiate

from cliplab.lit.param_groups import param_groups
from cliplab.lit.sharding import FSDP2Strategy, mixed_precision_policy, shard_model


def _tiny_clip(channels_last_resnet: bool = False):
    import _mp_train_script as script
    from hydra.utils import instantiate as build

    torch.manual_seed(0)
    model = script.CHANNELS_LAST_RN_MODEL if channels_last_resnet else script.MODEL
    return build(model, _convert_="object")


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    from torch.distributed.device_mesh import init_device_mesh

    yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    dist.destroy_process_group()


def test_shard_model_wraps_blocks_keeps_names_and_outputs(single_process_group):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    reference, model = _tiny_clip(), _tiny_clip()
    names = [n for n, _ in model.named_parameters()]
    shard_model(model, single_process_group)
    assert [n for n, _ in model.named_parameters()] == names, "sharding must not rename parameters"
    for tower in (model.visual, model.text):
        blocks = [m for m in tower.modules() if isinstance(m, tower.block_classes())]
        assert blocks and all(isinstance(b, FSDPModule) for b in blocks)
        assert isinstance(tower, FSDPModule)
    assert isinstance(model, FSDPModule)
    # The 0-d temperature cannot be sharded by FSDP2: it stays a plain tensor, the rest are DTensors.
    assert not isinstance(model.logit_scale, DTensor)
    assert all(isinstance(p, DTensor) for n, p in model.named_parameters() if n != "logit_scale")

    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(1, 999, (2, 16))
    want, got = reference(images, tokens), model(images, tokens)
    torch.testing.assert_close(got["image_features"], want["image_features"])
    torch.testing.assert_close(got["text_features"], want["text_features"])


def test_weight_decay_groups_and_clamp_on_sharded_params(single_process_group):
    reference, model = _tiny_clip(), _tiny_clip()
    shard_model(model, single_process_group)
    want = [sorted(p.numel() for p in g["params"]) for g in param_groups(reference, 0.1)]
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    # DTensor.ndim and numel are the global ones, so the split matches the unsharded model.
    assert [sorted(p.numel() for p in g["params"]) for g in groups] == want
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(1, 999, (2, 16))
    out = model(images, tokens)
    (-(out["logit_scale"] * (out["image_features"] * out["text_features"]).sum())).backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    assert float(model.logit_scale.detach()) <= math.log(100) + 1e-6


def test_sharded_channels_last_resnet_matches_unsharded(single_process_group):
    """FSDP2 shards contiguous storage only: the NHWC weights go back to NCHW first (the inputs stay NHWC);
    outputs and gradients must not change."""
    reference, model = _tiny_clip(channels_last_resnet=True), _tiny_clip(channels_last_resnet=True)
    shard_model(model, single_process_group)
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(1, 999, (4, 16))
    for m in (reference, model):
        out = m(images, tokens)
        (out["image_features"].square().sum() + out["text_features"].sum()).backward()
    torch.testing.assert_close(
        model(images, tokens)["image_features"], reference(images, tokens)["image_features"]
    )
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        torch.testing.assert_close(grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_mixed_precision_policy_from_config():
    policy = mixed_precision_policy(param_dtype="bfloat16", reduce_dtype="float32")
    assert policy.param_dtype is torch.bfloat16 and policy.reduce_dtype is torch.float32
    assert policy.output_dtype is None
    with pytest.raises(ValueError, match="unknown dtype"):
        mixed_precision_policy(param_dtype="bf17")


def test_fsdp_preset_builds_fsdp2_strategy(cfg_factory):
    cfg = cfg_factory(["trainer=fsdp"])
    assert cfg.trainer.precision == "32-true"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDP2Strategy)
    assert strategy.fsdp_kwargs["mp_policy"].param_dtype is torch.bfloat16
    assert strategy.fsdp_kwargs["reshard_after_forward"] is True


@pytest.mark.parametrize("preset", ["deepspeed", "deepspeed_stage3"])
def test_deepspeed_gets_contiguous_weights_of_channels_last_towers(cfg_factory, preset):
    """ZeRO views parameters flat: the model it is handed holds NCHW weights; single-device runs keep NHWC."""
    pytest.importorskip("deepspeed")
    from types import SimpleNamespace

    from cliplab.pipeline import build_module

    weights = {}
    for name in (preset, "cpu"):
        cfg = cfg_factory([f"trainer={name}", "model=tiny_rn"])
        module = build_module(cfg)
        module._trainer = (
            SimpleNamespace(strategy=instantiate(cfg.trainer.strategy)) if name != "cpu" else None
        )
        module.configure_model()
        weights[name] = [p for p in module.model.visual.parameters() if p.dim() == 4]
    assert all(w.is_contiguous() for w in weights[preset])
    assert not all(w.is_contiguous() for w in weights["cpu"])


def test_ddp_cpu_preset_is_two_gloo_processes(cfg_factory):
    cfg = cfg_factory(["trainer=ddp_cpu"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 2
    strategy = instantiate(cfg.trainer.strategy)
    assert strategy.process_group_backend == "gloo"


@pytest.mark.parametrize(("preset", "stage"), [("deepspeed", 2), ("deepspeed_stage3", 3)])
def test_deepspeed_presets_build_strategies(cfg_factory, preset, stage):
    pytest.importorskip("deepspeed")
    from pytorch_lightning.strategies import DeepSpeedStrategy

    cfg = cfg_factory([f"trainer={preset}"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config["zero_optimization"]["stage"] == stage
    assert cfg.trainer.accelerator == "gpu"


def test_installed_deepspeed_can_broadcast_the_scalar_temperature(monkeypatch, cfg_factory):
    """DeepSpeed 0.19.8 broadcasts every parameter as `p.data.view(torch.uint8)`, which raises on 0-dim
    tensors such as `logit_scale` before the first step (seen on an H100); the pin keeps such releases out,
    and validation names the problem if one is installed anyway."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.engine import DeepSpeedEngine

    from cliplab import validate

    assert validate.deepspeed_handles_scalar_parameters()

    def broken(self):  # the 0.19.8 behaviour
        for p in self.module.parameters():
            p.data.view(torch.uint8)

    monkeypatch.setattr(DeepSpeedEngine, "_broadcast_model", broken)
    assert not validate.deepspeed_handles_scalar_parameters()
    with pytest.raises(validate.ConfigError, match="deepspeed<0.19"):
        validate.check_hardware(cfg_factory(["trainer=deepspeed"]))


@pytest.mark.parametrize("preset", ["fsdp", "deepspeed", "deepspeed_stage3"])
def test_gpu_strategies_without_gpu_fail_with_a_hint(cfg_factory, preset):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from cliplab.utils.errors import ConfigError
    from cliplab.validate import validate

    with pytest.raises(ConfigError, match="GPU"):
        validate(cfg_factory([f"trainer={preset}"]))


def test_torchrun_cluster_reads_world_from_torchrun_env(cfg_factory, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    cfg = cfg_factory(["cluster=torchrun", "trainer=ddp"])
    assert cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2


def test_slurm_cluster_one_task_per_gpu():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra: pip install -e .[slurm]"
    )
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["cluster=slurm", "trainer=ddp", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == 2 and launcher.tasks_per_node == cfg.trainer.devices == launcher.gpus_per_node
