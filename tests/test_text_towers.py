"""Text towers: open_clip parity for the CLIP tower, and the tower contract for every text-tower YAML."""

from pathlib import Path

import open_clip
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import resize_text_pos_embed as open_clip_resize_text_pos_embed

from cliplab.models.text_tower import CLIPTextTower, resize_text_pos_embed

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model" / "text_tower"
TEXTS = ["a photo of a cat", "", "a very long caption " * 30, "naïve café 😀 日本語"]


def _open_clip_model(quick_gelu: bool, context_length: int = 77) -> OpenClipCLIP:
    torch.manual_seed(0)
    text_cfg = dict(context_length=context_length, vocab_size=49408, width=64, heads=4, layers=2)
    vision_cfg = dict(layers=1, width=64, patch_size=16, image_size=32)
    return OpenClipCLIP(32, vision_cfg, text_cfg, quick_gelu=quick_gelu).eval()


def _text_state_dict(model: OpenClipCLIP) -> dict:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("visual.") and k != "logit_scale"}


def _tower(**kwargs) -> CLIPTextTower:
    torch.manual_seed(0)
    settings = dict(embed_dim=32, context_length=16, width=64, heads=4, layers=2, act="gelu")
    return CLIPTextTower(**{**settings, **kwargs})


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_matches_open_clip_text_features(act):
    oracle = _open_clip_model(quick_gelu=act == "quick_gelu")
    tower = CLIPTextTower(32, width=64, heads=4, layers=2, act=act).eval()
    tower.load_state_dict(_text_state_dict(oracle))
    tokens = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        expected = oracle.encode_text(tokens)
        ours = tower(tokens)
    assert ours.shape == (len(TEXTS), 32)
    assert (ours - expected).abs().max().item() <= 1e-5
    # Our keys are open_clip's: a round trip back loads strictly.
    oracle.load_state_dict({**oracle.state_dict(), **tower.state_dict()}, strict=True)


def test_explicit_eot_pooling_equals_argmax_for_openai_vocab():
    tower = _tower().eval()
    by_id = _tower(eot_token_id=49407).eval()
    tokens = open_clip.tokenize(TEXTS, context_length=16)
    with torch.no_grad():
        assert torch.equal(tower(tokens), by_id(tokens))


def test_shorter_token_batches_and_too_long_rejected():
    tower = _tower().eval()
    tokens = open_clip.tokenize(TEXTS, context_length=16)
    with torch.no_grad():
        # Causal attention: features at EOT ignore later positions, so trailing padding can be dropped.
        assert torch.allclose(tower(tokens[:1, :8]), tower(tokens[:1]), atol=1e-6)
    with pytest.raises(ValueError, match="context_length"):
        tower(torch.zeros(1, 17, dtype=torch.long))


def test_grad_checkpointing_gives_same_outputs_and_grads():
    tokens = open_clip.tokenize(TEXTS, context_length=16)
    plain, ckpt = _tower(), _tower(grad_checkpointing=True)
    outputs = []
    for tower in (plain, ckpt):
        out = tower(tokens)
        out.square().sum().backward()
        outputs.append(out)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_lock_groups():
    tower = _tower(layers=3)

    def trainable():
        return {n for n, p in tower.named_parameters() if p.requires_grad}

    tower.lock()
    assert trainable() == set()
    tower.lock(unlocked_groups=1)
    assert trainable() == {"ln_final.weight", "ln_final.bias", "text_projection"}
    tower.lock(unlocked_groups=2)
    assert {n.split(".")[2] for n in trainable() if n.startswith("transformer.")} == {"2"}
    tower.lock(unlocked_groups=100)
    assert trainable() == {n for n, _ in tower.named_parameters()}


def test_resize_positional_embedding_matches_open_clip_and_loads():
    oracle = _open_clip_model(quick_gelu=True)
    state = _text_state_dict(oracle)
    target = _tower(act="quick_gelu", context_length=32)
    expected = {"positional_embedding": state["positional_embedding"].clone()}
    open_clip_resize_text_pos_embed(expected, target)
    resized = resize_text_pos_embed(state["positional_embedding"], 32)
    assert resized.shape == (32, 64)
    assert torch.allclose(resized, expected["positional_embedding"], atol=1e-6)
    target.load_state_dict(state)  # a 77-token checkpoint into a 32-token tower
    assert torch.allclose(target.positional_embedding.detach(), resized, atol=1e-6)


# ---- tower contract over every YAML in conf/model/text_tower/ ----

# Settings that make a tower small enough to run a forward pass in a test, by target class.
_SHRINK = {
    "cliplab.models.text_tower.CLIPTextTower": {"width": 64, "heads": 4, "layers": 2},
}


def _compose(yaml_path: Path, embed_dim: int, context_length: int, **overrides):
    """Place the tower under `model.text_tower` as a named model file would, so `${..x}` resolves."""
    node = OmegaConf.load(yaml_path)
    for key, value in overrides.items():
        node[key] = value
    root = OmegaConf.create({"model": {"embed_dim": embed_dim, "context_length": context_length}})
    root.model.text_tower = node
    return root


@pytest.mark.parametrize("yaml_path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_tower_contract(yaml_path):
    cfg = _compose(yaml_path, embed_dim=48, context_length=16)
    node = cfg.model.text_tower
    assert node.embed_dim == 48 and node.context_length == 16
    assert node.tokenizer.context_length == 16
    if not node._target_.startswith("cliplab.models.text_tower."):
        pytest.skip("covered by its own module's tests")  # HF towers need local weights/tokenizer files

    tokenizer = instantiate(node.tokenizer)
    tokens = tokenizer(TEXTS)
    assert tokens.dtype == torch.long and tokens.shape == (len(TEXTS), 16)
    assert tokenizer.pad_token_id == 0 and tokenizer.vocab_size == node.vocab_size

    # The full-size tower is only built on the meta device (no memory, no compute).
    with torch.device("meta"):
        full = instantiate(node, tokenizer=None)
    assert full.output_dim == 48 and full.text_projection.shape == (node.width, 48)

    small = instantiate(
        _compose(yaml_path, 48, 16, **_SHRINK[node._target_]).model.text_tower, tokenizer=None
    )
    out = small(tokens)
    assert out.shape == (len(TEXTS), small.output_dim) and torch.isfinite(out).all()
    names = {n for n, _ in small.named_parameters()}
    assert small.no_weight_decay() <= names
    assert any(isinstance(m, small.block_classes()) for m in small.modules())
    small.set_grad_checkpointing(True)
    small(tokens).sum().backward()
    small.lock(unlocked_groups=0, freeze_norm_stats=True)
    assert not any(p.requires_grad for p in small.parameters())


def test_paper_text_tower_sizes():
    """Parameter counts of OpenAI's text towers (ViT-B/32: 63.43M with embed 512, context 77)."""
    expected = {"clip_b": (512, 63.43), "clip_l": (768, 123.65)}
    for name, (embed_dim, millions) in expected.items():
        cfg = _compose(CONF_DIR / f"{name}.yaml", embed_dim=embed_dim, context_length=77)
        with torch.device("meta"):
            tower = instantiate(cfg.model.text_tower, tokenizer=None)
        assert round(sum(p.numel() for p in tower.parameters()) / 1e6, 2) == millions, name
