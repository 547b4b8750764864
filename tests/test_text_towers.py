"""Text towers: open_clip parity for the CLIP tower, and the tower contract for every text-tower YAML."""

import pickle
from pathlib import Path

import open_clip
import pytest
import torch
from hydra.utils import instantiate
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import resize_text_pos_embed as open_clip_resize_text_pos_embed

from cliplab.models.hf_text_tower import HFTextTower, HFTokenizer
from cliplab.models.text_tower import CLIPTextTower, resize_text_pos_embed
from tests._tiny_bert import TINY_BERT, VOCAB, save_tiny_bert_tokenizer

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
    tower.lock(unlocked_groups=1)  # open_clip's groups (tests/test_locking.py): the projection alone
    assert trainable() == {"text_projection"}
    tower.lock(unlocked_groups=2)  # then the last block with the final LayerNorm
    assert {n.split(".")[2] for n in trainable() if n.startswith("transformer.")} == {"2"}
    assert {"ln_final.weight", "ln_final.bias", "text_projection"} <= trainable()
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


# The contract of every text-tower YAML (and its tokenizer) is checked in tests/test_contracts.py.


def _compose(name: str, embed_dim: int, context_length: int):
    """The tower as a named model holds it (Hydra composes its `defaults`, the group's bases)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR.parents[1]), version_base="1.3"):
        overrides = [f"model/text_tower={name}", f"model.embed_dim={embed_dim}"]
        return compose(
            config_name="model/tiny", overrides=[*overrides, f"model.context_length={context_length}"]
        )


def test_paper_text_tower_sizes():
    """Parameter counts of OpenAI's text towers (ViT-B/32: 63.43M with embed 512, context 77)."""
    expected = {"clip_b": (512, 63.43), "clip_l": (768, 123.65)}
    for name, (embed_dim, millions) in expected.items():
        cfg = _compose(name, embed_dim=embed_dim, context_length=77)
        with torch.device("meta"):
            tower = instantiate(cfg.model.text_tower)
        assert round(sum(p.numel() for p in tower.parameters()) / 1e6, 2) == millions, name


# ---- Hugging Face towers (tiny encoders built from config; the hub is unreachable in tests) ----


@pytest.fixture(scope="module")
def tiny_hf_tokenizer_dir(tmp_path_factory) -> Path:
    return save_tiny_bert_tokenizer(tmp_path_factory.mktemp("tiny_bert_tokenizer"))


def _hf_tower(
    pooler: str = "mean", proj: str = "linear", config: dict | None = None, **kwargs
) -> HFTextTower:
    torch.manual_seed(0)
    return HFTextTower(48, config=config or dict(TINY_BERT), pooler=pooler, proj=proj, **kwargs).eval()


def test_hf_tokenizer_pads_truncates_and_pickles(tiny_hf_tokenizer_dir):
    tokenizer = HFTokenizer(tiny_hf_tokenizer_dir, context_length=8)
    tokens = tokenizer(["a  photo\nof a cat", "the very long long long long long long caption"])
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert tokens[0].tolist() == [2, 5, 6, 7, 5, 8, 3, 0]  # [CLS] a photo of a cat [SEP] [PAD]
    assert tokens[1, -1].item() == 3  # truncation keeps [SEP]
    assert tokenizer.pad_token_id == 0 and tokenizer.vocab_size == len(VOCAB)
    assert tokenizer("a cat", context_length=5).shape == (1, 5)
    assert torch.equal(pickle.loads(pickle.dumps(tokenizer))(["a cat"]), tokenizer(["a cat"]))


@pytest.mark.parametrize("pooler", ["mean", "cls", "cls_last_hidden_state", "max", "last"])
def test_hf_pooling_matches_transformers_outputs(pooler):
    from transformers import AutoConfig, AutoModel

    tower = _hf_tower(pooler=pooler, proj="none")
    settings = dict(TINY_BERT)
    reference = AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))
    missing = reference.load_state_dict(tower.transformer.state_dict(), strict=False).missing_keys
    assert all(k.startswith("pooler.") for k in missing) and (not missing) == (pooler == "cls")
    reference.eval()
    tokens = torch.tensor([[2, 5, 6, 7, 5, 8, 3, 0, 0], [2, 10, 9, 3, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        ours = tower(tokens)
        for row, length in enumerate([7, 4]):
            # Unpadded sequence alone: what a pooled feature must equal.
            output = reference(input_ids=tokens[row : row + 1, :length])
            hidden = output.last_hidden_state[0]
            expected = {
                "mean": hidden.mean(0),
                "cls": output.pooler_output[0],  # BERT's dense + tanh over the first token, as open_clip
                "cls_last_hidden_state": hidden[0],
                "max": hidden.max(0).values,
                "last": hidden[-1],
            }[pooler]
            assert torch.allclose(ours[row], expected, atol=1e-5), (pooler, row)


def test_hf_padding_token_of_roberta_is_masked():
    config = dict(TINY_BERT, model_type="roberta", pad_token_id=1, max_position_embeddings=66)
    tower = _hf_tower(config=config)
    assert tower.pad_token_id == 1
    short = torch.tensor([[0, 5, 6, 7, 2]])
    padded = torch.tensor([[0, 5, 6, 7, 2, 1, 1, 1]])
    with torch.no_grad():
        assert torch.allclose(tower(short), tower(padded), atol=1e-5)


def test_hf_projection_layouts():
    assert {n for n, _ in _hf_tower(proj="linear").named_parameters() if n.startswith("proj")} == {
        "proj.weight"
    }
    mlp = _hf_tower(proj="mlp")
    assert {n for n, _ in mlp.named_parameters() if n.startswith("proj")} == {
        "proj.0.weight",
        "proj.2.weight",
    }
    assert mlp.proj[0].out_features == (32 + 48) // 2 and mlp.output_dim == 48
    assert _hf_tower(proj="none").output_dim == 32
    assert not any("pooler" in n for n, _ in mlp.named_parameters())  # only `cls` reads the encoder's pooler
    assert any("pooler" in n for n, _ in _hf_tower(pooler="cls_pooler").named_parameters())
    with pytest.raises(ValueError, match="pooler"):
        _hf_tower(pooler="attention")


def test_hf_pretrained_directory_round_trip(tmp_path, tiny_hf_tokenizer_dir):
    tower = _hf_tower()
    tower.transformer.save_pretrained(tmp_path / "model")
    loaded = HFTextTower(48, model_name_or_path=str(tmp_path / "model"), pooler="mean", proj="linear").eval()
    loaded.proj.load_state_dict(tower.proj.state_dict())
    tokens = HFTokenizer(tiny_hf_tokenizer_dir, context_length=12)(["a photo of a cat", "the dog"])
    with torch.no_grad():
        assert torch.allclose(loaded(tokens), tower(tokens), atol=1e-6)
    fresh = HFTextTower(48, model_name_or_path=str(tmp_path / "model"), pretrained=False)
    assert not torch.equal(
        fresh.transformer.embeddings.word_embeddings.weight,
        loaded.transformer.embeddings.word_embeddings.weight,
    )


def test_hf_lock_and_grad_checkpointing():
    tower = _hf_tower()
    tower.lock(unlocked_groups=1)
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == {"proj.weight"}
    tower.lock(unlocked_groups=2)
    layers = {n.split(".")[3] for n, p in tower.named_parameters() if p.requires_grad and ".layer." in n}
    assert layers == {"1"}
    tower.lock(unlocked_groups=0)
    assert not any(p.requires_grad for p in tower.parameters())

    tokens = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]])
    plain, ckpt = _hf_tower().train(), _hf_tower(grad_checkpointing=True).train()
    assert all(layer.gradient_checkpointing for layer in ckpt.transformer.encoder.layer)
    for tower in (plain, ckpt):
        tower(tokens).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


NAMED_MODELS = sorted(p.stem for p in (CONF_DIR.parent).glob("*.yaml"))


@pytest.mark.parametrize("model_name", NAMED_MODELS)
def test_named_models_compose_text_tower(model_name):
    """Through Hydra's group composition, the tower reads embed_dim/context_length of the named model."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR.parents[1]), version_base=None):
        cfg = compose(config_name=None, overrides=[f"+model={model_name}"])
    node = cfg.model.text_tower
    assert node.embed_dim == cfg.model.embed_dim
    assert node.context_length == cfg.model.tokenizer.context_length == cfg.model.context_length
    assert "tokenizer" not in node  # beside the towers, at model.tokenizer
    with torch.device("meta"):
        tower = instantiate(node)
    assert tower.output_dim == cfg.model.embed_dim


@pytest.mark.gpu
def test_clip_text_tower_on_cuda_matches_open_clip():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    oracle = _open_clip_model(quick_gelu=True).cuda()
    tower = CLIPTextTower(32, width=64, heads=4, layers=2, act="quick_gelu").eval().cuda()
    tower.load_state_dict(_text_state_dict(oracle))
    tokens = open_clip.tokenize(TEXTS).cuda()
    with torch.no_grad():
        expected = oracle.encode_text(tokens)
        assert (tower(tokens) - expected).abs().max().item() <= 1e-4
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = tower(tokens).float()
    assert torch.nn.functional.cosine_similarity(low, expected).min().item() > 0.99
