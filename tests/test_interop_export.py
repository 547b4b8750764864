"""Exports checked by the other libraries' own loaders and clients.

open_clip: `create_model_and_transforms("local-dir:<dir>")` + `get_tokenizer("local-dir:<dir>")` give the
same pixels, tokens and features as cliplab (default tiny model, timm towers through open_clip's TimmModel,
Hugging Face text towers). Hugging Face: `pipeline("zero-shot-image-classification", model=<dir>)` and
`CLIPProcessor` give cliplab's zero-shot probabilities. What cannot be expressed is refused in one line.
"""

import open_clip
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from cliplab.data.transforms import eval_transform
from cliplab.eval.zeroshot import build_zeroshot_classifier
from cliplab.models.clip import CLIP
from cliplab.models.hf_text_tower import HFTextTower, HFTokenizer
from cliplab.models.image_tower import TimmImageTower
from cliplab.models.interop import (
    build_clip,
    export_hf_clip,
    export_openclip,
    load_openclip_checkpoint,
    load_openclip_state_dict,
)
from cliplab.models.interop.openclip_towers import ExportError
from cliplab.models.text_tower import CLIPTextTower
from cliplab.models.tokenizer import CLIPTokenizer
from tests._tiny_bert import VOCAB
from tests.conftest import CONF
from tests.test_interop import RN, VIT, cliplab_model, inputs, open_clip_model
from tests.test_interop_hf import ENCODERS, tokens_for

CAPTIONS = [
    "a photo of a cat",
    "Grinning Face With Big Eyes",
    "naïve café, 3 dogs",
    "emoji 😀 smiles",
    "the dog",
]


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial norms and biases (fresh models have LayerNorm 1 / 0), so every mapping is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_model() -> CLIP:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="model/tiny").model  # from conf/: the bases pick /model/tokenizer
    torch.manual_seed(0)
    return _perturbed(build_clip(cfg))


def rgb_images(sizes, seed: int = 0) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for w, h in sizes:
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        out.append(Image.fromarray(pixels, "RGB"))
    return out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_default_tiny_model_exports_to_open_clip(tmp_path):
    ours = tiny_model()
    out = export_openclip(ours, tmp_path / "tiny")
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    theirs.eval()
    assert theirs.visual.pool_type == "avg" and theirs.visual.final_ln_after_pool

    images = rgb_images([(64, 64), (80, 64), (50, 90)])  # square, and two that are resized and cropped
    pixels = torch.stack([preprocess(img) for img in images])
    # Both resize with Pillow; only the float normalisation may round differently.
    assert max_diff(pixels, torch.stack([eval_transform(64)(img) for img in images])) <= 1e-6
    tokens = open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS)
    assert torch.equal(tokens, CLIPTokenizer(context_length=32)(CAPTIONS))
    with torch.no_grad():
        assert max_diff(ours.encode_image(pixels), theirs.encode_image(pixels)) <= 1e-5
        assert max_diff(ours.encode_text(tokens), theirs.encode_text(tokens)) <= 1e-5

    again = tiny_model()
    torch.nn.init.zeros_(again.visual.trunk.fc_norm.weight)
    load_openclip_checkpoint(again, out / "open_clip_model.safetensors")  # and back into cliplab
    with torch.no_grad():
        assert max_diff(again.encode_image(pixels), ours.encode_image(pixels)) == 0


def _timm_clip(model_name: str, pool: str, proj: str, embed: int, image_size: int | None, **kwargs) -> CLIP:
    torch.manual_seed(0)
    image = TimmImageTower(model_name, embed, image_size=image_size, pool=pool, proj=proj, **kwargs)
    text = CLIPTextTower(embed, context_length=77, width=64, heads=2, layers=1, act="gelu")
    return _perturbed(CLIP(image, text, embed))


TIMM_CASES = [
    ("test_resnet", "avg", "linear", 32, 64),
    ("test_resnet", "avg", "mlp", 32, 64),
    ("test_convnext", "avg", "none", 64, 64),
    (
        "test_vit",
        "token",
        "linear",
        32,
        None,
    ),  # a timm ViT without CLIP's pre-norm: TimmModel, not CLIP's ViT
]


@pytest.mark.parametrize("name,pool,proj,embed,size", TIMM_CASES, ids=[f"{c[0]}-{c[2]}" for c in TIMM_CASES])
def test_timm_towers_export_as_open_clip_timm_models(tmp_path, name, pool, proj, embed, size):
    ours = _timm_clip(name, pool, proj, embed, size)
    out = export_openclip(ours, tmp_path / name)
    theirs = open_clip.create_model_and_transforms(f"local-dir:{out}")[0].eval()
    assert type(theirs.visual).__name__ == "TimmModel"
    side = size or 160
    images, tokens = inputs(side)
    with torch.no_grad():
        assert max_diff(ours.encode_image(images), theirs.encode_image(images)) <= 1e-5
        assert max_diff(ours.encode_text(tokens), theirs.encode_text(tokens)) <= 1e-5


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory):
    from transformers import BertTokenizer

    path = tmp_path_factory.mktemp("bert_tokenizer")
    BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}).save_pretrained(path)
    return path


HF_EXPORTS = [("bert", "cls", "mlp"), ("xlm-roberta", "mean", "linear"), ("mt5", "mean", "linear")]


@pytest.mark.parametrize("arch,pooler,proj", HF_EXPORTS)
def test_hf_text_towers_export_to_open_clip(tmp_path, bert_tokenizer_dir, arch, pooler, proj):
    image = cliplab_model(VIT).visual
    # BERT gets the vocabulary of the tokenizer files; the others are fed token ids directly.
    config = dict(ENCODERS[arch], vocab_size=len(VOCAB)) if arch == "bert" else dict(ENCODERS[arch])
    torch.manual_seed(0)
    ours = _perturbed(
        CLIP(image, HFTextTower(32, config=config, pooler=pooler, proj=proj), 32, context_length=12)
    )
    tokenizer = HFTokenizer(bert_tokenizer_dir, context_length=12)
    out = export_openclip(ours, tmp_path / arch, tokenizer=tokenizer)
    theirs = open_clip.create_model_and_transforms(f"local-dir:{out}")[0].eval()
    assert type(theirs.text).__name__ == "HFTextEncoder"
    images = inputs(VIT["image_size"])[0]
    if arch == "bert":  # the tokenizer files belong to this encoder
        tokens = open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS)
        assert torch.equal(tokens, tokenizer(CAPTIONS))
    else:
        tokens = tokens_for(arch)
    with torch.no_grad():
        assert max_diff(ours.encode_text(tokens), theirs.encode_text(tokens)) <= 1e-5
        assert max_diff(ours.encode_image(images), theirs.encode_image(images)) <= 1e-5


def _one_line_refusal(export, model, tmp_path, match: str, **kwargs) -> None:
    with pytest.raises(ExportError, match=match) as err:
        export(model, tmp_path / "refused", **kwargs)
    assert "\n" not in str(err.value)


def test_open_clip_refuses_what_it_cannot_build_in_one_line(tmp_path, bert_tokenizer_dir):
    _one_line_refusal(
        export_openclip,
        _timm_clip("test_resnet", "avg", "linear", 32, 64, act="silu"),
        tmp_path,
        "passes no timm.create_model arguments",
    )
    _one_line_refusal(
        export_openclip, _timm_clip("test_vit", "token", "linear", 32, 64), tmp_path, "builds another network"
    )  # TimmModel cannot resize a ViT's position table
    max_pooled = CLIP(
        cliplab_model(VIT).visual, HFTextTower(32, config=dict(ENCODERS["bert"]), pooler="max"), 32
    )
    _one_line_refusal(export_openclip, max_pooled, tmp_path, "max_pooler", tokenizer=bert_tokenizer_dir)


def test_hf_clipmodel_refuses_what_it_cannot_express_in_one_line(tmp_path):
    hf_text = CLIP(cliplab_model(VIT).visual, HFTextTower(32, config=dict(ENCODERS["bert"])), 32)
    for model, match in [
        (tiny_model(), "mean of its patch tokens"),
        (cliplab_model(RN), "CLIP ResNet"),
        (_timm_clip("test_resnet", "avg", "linear", 32, 64), "test_resnet tower"),
        (hf_text, "not a Hugging Face encoder"),
    ]:
        _one_line_refusal(export_hf_clip, model, tmp_path, match)


def test_exported_clipmodel_tokenizer_matches_cliplabs(tmp_path):
    from transformers import AutoTokenizer
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    out = export_hf_clip(cliplab_model(VIT), tmp_path / "hf")
    assert {"vocab.json", "merges.txt", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    ours = CLIPTokenizer(context_length=16)(CAPTIONS + ["a very long caption " * 6])
    for hf in (HFCLIPTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(out)):
        theirs = hf(
            CAPTIONS + ["a very long caption " * 6], padding="max_length", max_length=16, truncation=True
        )
        for mine, their in zip(ours.tolist(), theirs["input_ids"]):
            end = mine.index(49407) + 1  # same ids through end-of-text; HF pads with end-of-text, cliplab 0
            assert their[:end] == mine[:end] and set(their[end:]) <= {49407}


def test_exported_clipmodel_runs_in_the_zero_shot_pipeline_with_cliplabs_probabilities(tmp_path):
    from transformers import CLIPModel, CLIPProcessor, pipeline

    ours = cliplab_model(VIT, act="quick_gelu")
    load_openclip_state_dict(ours, open_clip_model(VIT, quick_gelu=True, seed=3).state_dict())
    out = export_hf_clip(ours, tmp_path / "hf")
    labels = ["cat", "dog", "red car", "tree"]
    template = "This is a photo of {}."  # the pipeline's default hypothesis template
    size = VIT["image_size"]
    images = rgb_images([(size, size), (size, size), (48, 40), (30, 70)], seed=4)
    with torch.no_grad():
        classifier = build_zeroshot_classifier(ours, CLIPTokenizer(context_length=77), labels, [template])
        pixels = torch.stack([eval_transform(size)(img) for img in images])
        expected = (ours.logit_scale.exp() * ours.encode_image(pixels, normalize=True) @ classifier).softmax(
            -1
        )

        processor = CLIPProcessor.from_pretrained(out)
        batch = processor(
            text=[template.format(c) for c in labels], images=images, return_tensors="pt", padding=True
        )
        pixel_gap = max_diff(batch["pixel_values"][:2], pixels[:2])  # unresized images: the same tensor
        probs = CLIPModel.from_pretrained(out).eval()(**batch).logits_per_image.softmax(-1)
    assert pixel_gap <= 1e-6, pixel_gap
    assert max_diff(probs[:2], expected[:2]) <= 1e-4
    # Resized images: HF's resize is not Pillow's; pixels differ by rounding (about one grey level, 0.015
    # normalised) and the probabilities by under 1e-3 (measured 8e-5 to 8e-4 on these random weights).
    assert max_diff(batch["pixel_values"], pixels) <= 0.02
    assert max_diff(probs, expected) <= 2e-3

    # Centre crop: with an odd excess (39 -> 32) HF floors the offset where cliplab (and torchvision, open_clip)
    # round half to even, so HF's crop starts one pixel earlier: it equals cliplab's of the shifted window.
    tall = rgb_images([(size, size + 7)], seed=5)[0]
    hf_pixels = processor(images=tall, return_tensors="pt")["pixel_values"][0]
    assert max_diff(hf_pixels, eval_transform(size)(tall)) > 0.5
    assert max_diff(hf_pixels, eval_transform(size)(tall.crop((0, 3, size, size + 3)))) <= 1e-6

    answers = pipeline("zero-shot-image-classification", model=str(out), device="cpu")(
        images, candidate_labels=labels
    )
    from_pipeline = torch.tensor(
        [[next(a["score"] for a in row if a["label"] == c) for c in labels] for row in answers]
    )
    assert max_diff(from_pipeline, probs) <= 1e-5  # the pipeline is this processor + CLIPModel
    assert max_diff(from_pipeline[:2], expected[:2]) <= 1e-4
