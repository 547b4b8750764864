"""LoRA (conf/lora/default.yaml through the real CLIPModule): only adapters train, base weights stay
bit-identical, adapters merge into plain weights with the same outputs, checkpoints resume, bad targets stop
at start-up with one line."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from cliplab.checkpoints.load import load_module
from cliplab.lit.module import CLIPModule
from cliplab.models.lora import has_lora, merge_lora, resolve_targets
from cliplab.utils.errors import ConfigError
from cliplab.validate import validate
from tests._mp_train_script import LOSS
from tests._mp_train_script import MODEL as MP_MODEL
from tests._tiny import TinyBatches, quiet_trainer, tiny_loader
from tests.conftest import CONF

LORA = OmegaConf.to_container(OmegaConf.load(CONF / "lora" / "default.yaml"))
# the multi-process tests start the temperature above its clamp; here it starts inside (frozen, it stays)
MODEL = {**MP_MODEL, "init_logit_scale": 2.6592600369327779}
OPTIM = {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.1}


def _module(lora=LORA) -> CLIPModule:
    torch.manual_seed(0)
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, scheduler=None, lora=lora)
    module.configure_model()
    return module


def _trainer(steps: int, **kwargs) -> pl.Trainer:
    return quiet_trainer(max_steps=steps, num_sanity_val_steps=0, **kwargs)


def _base_state(module) -> dict:
    return {k: v.clone() for k, v in module.model.state_dict().items() if ".lora_" not in k}


def test_default_targets_adapt_the_attention_and_mlp_of_both_towers():
    module = _module()
    names = [name for name, _ in module.model.named_modules() if name.endswith(".lora_A")]
    image = sorted({n.split(".")[-2] for n in names if n.startswith("visual.")})
    text = sorted({n.split(".")[-2] for n in names if n.startswith("text.")})
    assert image == ["fc1", "fc2", "proj", "qkv"]  # in every block: not head.proj / patch_embed.proj
    assert not any("head" in n or "patch_embed" in n for n in names)
    assert text == ["c_fc", "c_proj", "out_proj"]
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)


@pytest.fixture(scope="module")
def trained():
    """A LoRA module after 3 training steps, with its trainer and the state before training."""
    module = _module()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = _trainer(3)
    trainer.fit(module, train_dataloaders=tiny_loader())
    return module, trainer, before


def test_only_adapters_train_and_base_weights_stay_bit_identical(trained):
    module, trainer, before = trained
    optimizer = trainer.optimizers[0]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    assert in_optimizer == {id(p) for p in trainable}  # no optimizer state for frozen weights
    assert {id(p) for p in optimizer.state} <= in_optimizer
    after = module.model.state_dict()
    for key, value in before.items():
        if ".lora_" not in key:
            assert torch.equal(after[key], value), key
    changed = [k for k, v in before.items() if ".lora_" in k and not torch.equal(after[k], v)]
    assert any("lora_B" in k for k in changed), "the adapters must actually train"


def test_also_train_adds_the_temperature():
    module = _module({**LORA, "also_train": ["logit_scale"]})
    assert module.model.logit_scale.requires_grad
    assert not module.model.text.text_projection.requires_grad


def _merged(module):
    adapted = module.model.eval()
    images, tokens = TinyBatches()[0]
    with torch.no_grad():
        expected = adapted(images, tokens)
        merged = merge_lora(copy.deepcopy(adapted))
        got = merged(images, tokens)
    return merged, expected, got


def test_merged_model_gives_the_adapted_outputs_with_plain_keys(trained):
    merged, expected, got = _merged(trained[0])
    assert not has_lora(merged)
    plain = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM)
    plain.configure_model()
    assert list(merged.state_dict()) == list(plain.model.state_dict())
    for key in ("image_features", "text_features"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
    # the merge changed the weights (the adapters were not zero): base + B A, not the base alone
    qkv = "visual.trunk.blocks.0.attn.qkv"
    base = trained[2][qkv + ".base_layer.weight"]
    assert not torch.equal(merged.state_dict()[qkv + ".weight"], base)


def test_export_after_merge_round_trips_through_open_clip_format(trained, tmp_path):
    from cliplab.models.interop import export_openclip, load_openclip_checkpoint

    merged, _, merged_out = _merged(trained[0])
    out = export_openclip(merged, tmp_path / "export")
    fresh = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM)
    fresh.configure_model()
    load_openclip_checkpoint(fresh.model, out / "open_clip_model.safetensors")
    images, tokens = TinyBatches()[0]
    with torch.no_grad():
        got = fresh.model.eval()(images, tokens)
    for key in ("image_features", "text_features"):
        torch.testing.assert_close(got[key], merged_out[key], rtol=1e-6, atol=1e-6)


def test_checkpoint_saves_and_resumes_with_adapters(trained, tmp_path):
    module, trainer, _ = trained
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)  # rebuilt from the stored hyperparameters, adapters included
    assert has_lora(loaded.model)
    state = module.model.state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    resumed = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, scheduler=None, lora=LORA)
    resumed_trainer = _trainer(5)
    resumed_trainer.fit(resumed, train_dataloaders=tiny_loader(), ckpt_path=str(path))
    assert resumed_trainer.global_step == 5
    after = resumed.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items() if ".lora_" not in k)
    assert any(not torch.equal(after[k], v) for k, v in state.items() if "lora_B" in k)


def test_resolve_targets_knows_every_tower_family():
    from tests.test_text_towers import _hf_tower

    hf = torch.nn.Module()
    hf.text = _hf_tower()
    names = resolve_targets(hf, {**LORA, "towers": ["text"]})["text"]
    assert {n.rsplit(".", 1)[-1] for n in names} == {"query", "key", "value", "dense"}
    assert all("attention" in n for n in names)


@pytest.mark.parametrize("model", ["tiny", "tiny_rn"])
def test_default_lora_passes_validation(cfg_factory, model):
    validate(cfg_factory([f"model={model}", "lora=default"]))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("lora.target_modules.image=[attn.nope]", "'attn.nope' matches no"),
        ("lora.target_modules.text=[c_fcx]", "'c_fcx' matches no"),
        ("lora.r=0", "lora.r=0 must be a positive integer"),
        ("lora.towers=[audio]", "unknown tower 'audio'"),
    ],
)
def test_bad_lora_stops_at_start_up_with_one_line(cfg_factory, override, words):
    with pytest.raises(ConfigError) as err:
        validate(cfg_factory(["lora=default", override]))
    message = str(err.value)
    assert words in message and "\n" not in message


def test_pretrained_weights_load_under_the_adapters(tmp_path):
    from cliplab.pipeline import load_pretrained

    torch.manual_seed(1)
    plain = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM)
    plain.configure_model()
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": plain.state_dict(), "hyper_parameters": dict(plain.hparams)}, path)
    torch.manual_seed(0)  # other initial weights than the checkpoint's
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, scheduler=None, lora=LORA)
    load_pretrained(module, OmegaConf.create({"pretrained": str(path), "ckpt_path": None}))
    module.configure_model()
    assert has_lora(module.model)
    state = module.model.state_dict()
    for key, value in plain.model.state_dict().items():
        adapted_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state.get(key, state.get(adapted_key)), value), key
