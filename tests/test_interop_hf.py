"""Hugging Face text towers against open_clip's own HFTextEncoder (tiny random encoders, no hub).

open_clip reads a tiny BERT / RoBERTa / XLM-R / mT5 config from a local folder, exactly as it reads a hub
model (`AutoConfig.from_pretrained`), builds its CustomTextCLIP, and cliplab loads that state dict through
`cliplab.models.interop`; features must agree to 1e-5 (fp32).
"""

import open_clip
import pytest
import torch
from transformers import AutoConfig

from cliplab.models.clip import CLIP
from cliplab.models.hf_text_tower import HFTextTower
from cliplab.models.image_tower import TimmImageTower
from cliplab.models.interop import load_openclip_state_dict
from tests._tiny_bert import TINY_ENCODER

EMBED = 48
VISION = dict(layers=1, width=32, head_width=16, patch_size=16, image_size=32)
LENGTH = 12
_ENCODER = dict(vocab_size=120, **TINY_ENCODER)
ENCODERS = {
    "bert": dict(model_type="bert", max_position_embeddings=LENGTH, **_ENCODER),
    # RoBERTa-style position ids start after the padding id: two more positions than tokens.
    "roberta": dict(model_type="roberta", max_position_embeddings=LENGTH + 2, pad_token_id=1, **_ENCODER),
    "xlm-roberta": dict(
        model_type="xlm-roberta", max_position_embeddings=LENGTH + 2, pad_token_id=1, **_ENCODER
    ),
    "mt5": dict(
        model_type="mt5",
        vocab_size=120,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
    ),
}


def encoder_dir(tmp_path, arch: str):
    settings = dict(ENCODERS[arch])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    path = tmp_path / arch
    config.save_pretrained(path)
    return path


def open_clip_hf_model(
    path, pooler: str, proj: str | None, embed: int = EMBED, seed: int = 0
) -> open_clip.CustomTextCLIP:
    torch.manual_seed(seed)
    text_cfg = dict(
        hf_model_name=str(path), hf_model_pretrained=False, hf_pooler_type=pooler, hf_proj_type=proj
    )
    model = open_clip.CustomTextCLIP(embed, vision_cfg=VISION, text_cfg=text_cfg)
    with torch.no_grad():  # non-trivial biases and norms (HF initialises them to 0 / 1)
        for name, p in model.text.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def cliplab_hf_model(arch: str, pooler: str, proj: str, embed: int = EMBED) -> CLIP:
    image = TimmImageTower(
        "vit_base_patch16_clip_224",
        embed,
        image_size=VISION["image_size"],
        width=VISION["width"],
        depth=VISION["layers"],
        num_heads=VISION["width"] // VISION["head_width"],
        act="gelu",
    )
    text = HFTextTower(embed, config=dict(ENCODERS[arch]), pooler=pooler, proj=proj)
    return CLIP(image, text, embed).eval()


def tokens_for(arch: str) -> torch.Tensor:
    """Random ids, each row ending at a different length and padded with the model's pad id."""
    pad = ENCODERS[arch].get("pad_token_id", 0)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(3, 120, (3, LENGTH), generator=g)
    for row, length in enumerate((4, 9, LENGTH)):
        tokens[row, length:] = pad
    return tokens


def assert_same_text_features(ours: CLIP, theirs, arch: str) -> None:
    tokens = tokens_for(arch)
    with torch.no_grad():
        diff = (ours.encode_text(tokens) - theirs.encode_text(tokens)).abs().max()
    assert diff <= 1e-5, float(diff)


CASES = [
    *[
        ("bert", pooler, proj)
        for pooler in ("cls_pooler", "mean_pooler", "cls_last_hidden_state_pooler")
        for proj in ("linear", "mlp", None)
    ],
    *[
        (arch, pooler, "mlp")
        for arch in ("roberta", "xlm-roberta")
        for pooler in ("cls_pooler", "mean_pooler", "cls_last_hidden_state_pooler")
    ],
    ("mt5", "mean_pooler", "linear"),
]


@pytest.mark.parametrize("arch,pooler,proj", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_open_clip_hf_text_encoder_loads_with_the_same_features(tmp_path, arch, pooler, proj):
    embed = (
        _ENCODER["hidden_size"] if proj is None else EMBED
    )  # no projection: open_clip needs width == embed
    theirs = open_clip_hf_model(encoder_dir(tmp_path, arch), pooler, proj, embed)
    ours = cliplab_hf_model(arch, pooler, proj or "none", embed)
    load_openclip_state_dict(ours, theirs.state_dict())  # strict: every weight used, none missing
    assert_same_text_features(ours, theirs, arch)
    has_pooler = any(".pooler." in k for k in ours.state_dict())
    assert has_pooler == (pooler == "cls_pooler" and arch != "mt5")


def test_cls_pooling_returns_the_encoders_pooler_output(tmp_path):
    """The bug this fixes: `cls` used to drop BERT's pooler and differ from open_clip by up to 0.43."""
    theirs = open_clip_hf_model(encoder_dir(tmp_path, "bert"), "cls_pooler", "linear")
    ours = cliplab_hf_model("bert", "cls", "linear")
    load_openclip_state_dict(ours, theirs.state_dict())
    plain = cliplab_hf_model("bert", "cls_last_hidden_state", "linear")
    load_openclip_state_dict(plain, theirs.state_dict())  # the unused pooler weights are dropped
    tokens = tokens_for("bert")
    with torch.no_grad():
        assert torch.allclose(ours.encode_text(tokens), theirs.encode_text(tokens), atol=1e-5)
        assert (plain.encode_text(tokens) - theirs.encode_text(tokens)).abs().max() > 1e-2


def test_config_built_open_clip_encoder_keeps_an_unused_pooler_that_is_dropped():
    """open_clip's HFTextEncoder(config=...) always builds BERT's pooler, even for mean pooling."""
    from open_clip.hf_model import HFTextEncoder

    settings = dict(ENCODERS["xlm-roberta"])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(0)
    theirs_text = HFTextEncoder(None, EMBED, config=config, pooler_type="mean_pooler", proj_type="mlp").eval()
    ours = cliplab_hf_model("xlm-roberta", "mean", "mlp")
    state = {f"visual.{k}": v for k, v in ours.visual.state_dict().items()}
    state.update({f"text.{k}": v for k, v in theirs_text.state_dict().items()})
    state["logit_scale"] = torch.tensor(2.0)
    assert any(k.startswith("text.transformer.pooler.") for k in state)
    load_openclip_state_dict(ours, state)
    tokens = tokens_for("xlm-roberta")
    with torch.no_grad():
        assert torch.allclose(ours.encode_text(tokens), theirs_text(tokens), atol=1e-5)


def test_max_pooling_is_the_masked_max_open_clip_intends(tmp_path):
    """open_clip's max_pooler fails on its own integer mask; cliplab's `max` is the max over real tokens."""
    from open_clip.hf_model import MaxPooler

    theirs = open_clip_hf_model(encoder_dir(tmp_path, "roberta"), "max_pooler", "linear")
    ours = cliplab_hf_model("roberta", "max", "linear")
    load_openclip_state_dict(ours, theirs.state_dict())
    tokens = tokens_for("roberta")
    mask = (tokens != 1).long()
    with torch.no_grad():
        out = theirs.text.transformer(input_ids=tokens, attention_mask=mask)
        hidden = out.last_hidden_state
        expected = torch.stack([hidden[i, mask[i].bool()].max(0).values for i in range(len(tokens))])
        try:
            pooled = MaxPooler()(out, mask)  # should open_clip fix it, compare with its result directly
        except RuntimeError as err:
            assert "boolean" in str(err)
        else:
            expected = pooled
        assert torch.allclose(ours.encode_text(tokens), theirs.text.proj(expected), atol=1e-5)


# ---- presets that name hub models, offline ------------------------------------------------------------

HUB_PRESETS = {
    "bert_base": "bert-base-uncased",
    "roberta_base": "roberta-base",
    "xlm_roberta_base": "xlm-roberta-base",
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 with an empty Hugging Face cache (a cached model would load offline)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))


def _assert_names_local_folder(message: str, name: str) -> None:
    key = "model.text_tower.model_name_or_path"
    assert "\n" not in message
    assert f"{key}={name} is a Hugging Face Hub name" in message
    assert f"--local-dir /data/{name}" in message and f"pass {key}=/data/{name}" in message


@pytest.mark.parametrize("preset", sorted(HUB_PRESETS))
def test_hub_presets_say_which_local_folder_to_pass_when_offline(offline, cfg_factory, preset, tmp_path):
    from cliplab.utils.errors import ConfigError
    from cliplab.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(cfg_factory([f"model/text_tower={preset}"]))
    _assert_names_local_folder(str(err.value), HUB_PRESETS[preset])
    local = tmp_path / "local_copy"
    local.mkdir()
    validate(cfg_factory([f"model/text_tower={preset}", f"model.text_tower.model_name_or_path={local}"]))


def test_hf_tower_and_tokenizer_built_by_name_offline_say_the_same(offline):
    from cliplab.models.hf_text_tower import HFTokenizer
    from cliplab.utils.errors import ConfigError

    for build in (
        lambda: HFTextTower(32, model_name_or_path="bert-base-uncased"),
        lambda: HFTokenizer("bert-base-uncased"),
    ):
        with pytest.raises(ConfigError) as err:
            build()
        _assert_names_local_folder(str(err.value), "bert-base-uncased")


def test_train_with_a_hub_preset_offline_stops_with_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty_hf_cache"))
    command = [sys.executable, "src/train.py", "model/text_tower=bert_base", f"paths.log_dir={tmp_path}"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: model.text_tower.model_name_or_path=bert-base-uncased"), lines[-5:]


def test_lock_keeps_the_pooler_with_the_projection():
    """The encoder's pooler sits after the last block: the last group, not the embeddings'."""
    tower = HFTextTower(EMBED, config=dict(ENCODERS["bert"]), pooler="cls")
    tower.lock(unlocked_groups=1)
    trainable = {
        n.split(".")[0] + "." + n.split(".")[1] for n, p in tower.named_parameters() if p.requires_grad
    }
    assert trainable == {"transformer.pooler", "proj.weight"}
    tower.lock(unlocked_groups=0)
    assert not any(p.requires_grad for p in tower.parameters())
