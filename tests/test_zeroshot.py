"""Zero-shot classifier and metrics against open_clip's and CLIP_benchmark's, on the same random weights."""

import pytest
import torch

from cliplab.eval.zeroshot import (
    ClassifierCache,
    ZeroShotAccumulator,
    build_zeroshot_classifier,
    encode_prompts,
    fill_templates,
    zeroshot_metrics,
)

open_clip = pytest.importorskip("open_clip")
from open_clip.zero_shot_classifier import build_zero_shot_classifier as oc_build  # noqa: E402

from tests._openclip_stand_in import ClipLabView, tiny_open_clip  # noqa: E402

CLASSES = [
    "cat",
    "dog",
    "umbrella with rain drops",
    "t-shirt",
    "ankle boot",
    "red apple",
    "grinning face",
    "a very long class name that keeps going on and on for a while",
    "bag",
    "coat",
    "sandal",
    "sneaker",
]
TEMPLATES = ["a photo of a {}.", "a bad drawing of the {}.", "{}", "an emoji of a {}, drawn in a flat style."]


@pytest.fixture(scope="module")
def setup():
    oc = tiny_open_clip()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return oc, ClipLabView(oc), tokenizer


def test_classifier_equals_open_clip(setup):
    oc, ours, tokenizer = setup
    expected = oc_build(oc, tokenizer, CLASSES, TEMPLATES, num_classes_per_batch=5, device="cpu")
    got = build_zeroshot_classifier(ours, tokenizer, CLASSES, TEMPLATES, batch_size=7)
    assert got.shape == expected.shape == (32, len(CLASSES))
    assert (got - expected).abs().max() <= 1e-5
    assert torch.allclose(got.norm(dim=0), torch.ones(len(CLASSES)), atol=1e-6)


def test_class_specific_prompts_equal_clip_benchmark(setup):
    """Each class its own prompts, of different numbers (CLIP_benchmark's dict templates, as for CuPL)."""
    oc, ours, tokenizer = setup
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    own = {
        name: [t.format(name) for t in TEMPLATES[: 1 + i % len(TEMPLATES)]] for i, name in enumerate(CLASSES)
    }
    own["bag"] = ["a bag.", "a handbag.", "a purse on a table.", "a backpack.", "a suitcase.", "a sack."]
    expected = cb.zero_shot_classifier(oc, tokenizer, CLASSES, own, "cpu", amp=False)
    got = build_zeroshot_classifier(ours, tokenizer, CLASSES, own, batch_size=7)
    assert got.shape == (32, len(CLASSES))
    assert (got - expected).abs().max() <= 1e-5
    # not the shared-template classifier: the prompts changed the weights
    assert (got - build_zeroshot_classifier(ours, tokenizer, CLASSES, TEMPLATES)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="none for 1 classes, e.g. 'coat'"):
        build_zeroshot_classifier(ours, tokenizer, CLASSES, {k: v for k, v in own.items() if k != "coat"})


def test_the_cache_tells_class_specific_prompts_apart(setup):
    _, ours, tokenizer = setup
    ours.requires_grad_(False)  # frozen: cached
    try:
        cache = ClassifierCache()
        first = cache.get(ours, tokenizer, CLASSES[:3], {n: [f"a {n}."] for n in CLASSES[:3]})
        other = cache.get(ours, tokenizer, CLASSES[:3], {n: [f"the {n}!"] for n in CLASSES[:3]})
        assert (first - other).abs().max() > 1e-3
        assert cache.get(ours, tokenizer, CLASSES[:3], {n: [f"the {n}!"] for n in CLASSES[:3]}) is other
    finally:
        ours.requires_grad_(True)


def test_trim_only_for_causal_towers(setup):
    _, ours, tokenizer = setup
    tokens = tokenizer(fill_templates(CLASSES, TEMPLATES))
    widths = []
    original = ours.text.forward
    ours.text.forward = lambda t: (widths.append(t.shape[1]), original(t))[1]
    try:
        encode_prompts(ours, tokens, batch_size=16)
        assert max(widths) < 77
        widths.clear()
        ours.text.causal = False
        encode_prompts(ours, tokens, batch_size=16)
        assert set(widths) == {77}
    finally:
        del ours.text.forward
        ours.text.causal = True


def test_accuracy_equals_open_clip_and_clip_benchmark(setup):
    oc, ours, tokenizer = setup
    torch.manual_seed(1)
    images = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        theirs = oc_build(oc, tokenizer, CLASSES, TEMPLATES, device="cpu")
        logits = oc.encode_image(images, normalize=True) @ theirs
    # half the labels are the model's own guesses, so accuracy is far from chance and from 1
    labels = torch.randint(len(CLASSES), (64,))
    labels[:32] = logits[:32].argmax(dim=1)
    top5 = logits.topk(5, dim=1).indices
    expected_top1 = (logits.argmax(1) == labels).float().mean().item()
    expected_top5 = (top5 == labels[:, None]).any(1).float().mean().item()

    classifier = build_zeroshot_classifier(ours, tokenizer, CLASSES, TEMPLATES)
    got = zeroshot_metrics(ours.encode_image(images).detach(), classifier, labels)
    assert got["top1"] == pytest.approx(expected_top1, abs=1e-9)
    assert got["top5"] == pytest.approx(expected_top5, abs=1e-9)

    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    from sklearn.metrics import balanced_accuracy_score

    # CLIP_benchmark's own classifier builder agrees too (its `accuracy` helper breaks on numpy 2)
    cb_classifier = cb.zero_shot_classifier(
        oc, tokenizer, CLASSES, [t.replace("{}", "{c}") for t in TEMPLATES], "cpu", amp=False
    )
    assert (classifier - cb_classifier).abs().max() <= 1e-5
    assert got["mean_recall"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)), abs=1e-9)


def test_metrics_stream_like_one_batch():
    torch.manual_seed(0)
    feats, classifier = torch.randn(50, 8), torch.nn.functional.normalize(torch.randn(8, 6), dim=0)
    labels = torch.randint(6, (50,))
    acc = ZeroShotAccumulator(6)
    for i in range(0, 50, 13):
        acc.update(feats[i : i + 13], classifier, labels[i : i + 13])
    assert acc.compute() == pytest.approx(zeroshot_metrics(feats, classifier, labels))


def test_mean_recall_ignores_absent_classes():
    classifier = torch.eye(4)
    feats = torch.eye(4)[[0, 0, 1, 3]]  # predicts 0, 0, 1, 3
    labels = torch.tensor([0, 1, 1, 1])  # classes 2 and 3 have no images
    got = zeroshot_metrics(feats, classifier, labels)
    assert got["top1"] == pytest.approx(0.5)
    assert got["mean_recall"] == pytest.approx((1 + 1 / 3) / 2)
    assert got["top5"] == 1.0  # top-k is capped at the number of classes


def test_cache_reuses_only_while_frozen(setup):
    _, ours, tokenizer = setup
    cache = ClassifierCache()
    first = cache.get(ours, tokenizer, CLASSES[:3], TEMPLATES)
    assert cache.get(ours, tokenizer, CLASSES[:3], TEMPLATES) is not first  # trainable: never cached
    ours.requires_grad_(False)
    try:
        a = cache.get(ours, tokenizer, CLASSES[:3], TEMPLATES)
        assert cache.get(ours, tokenizer, CLASSES[:3], TEMPLATES) is a
        assert cache.get(ours, tokenizer, CLASSES[:4], TEMPLATES) is not a
        with torch.no_grad():
            ours.oc.ln_final.weight.mul_(2.0)  # an in-place update invalidates the entry
        b = cache.get(ours, tokenizer, CLASSES[:3], TEMPLATES)
        assert b is not a
        with torch.no_grad():
            ours.oc.ln_final.weight.div_(2.0)
    finally:
        ours.requires_grad_(True)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="class name"):
        fill_templates([], ["{}"])
    with pytest.raises(ValueError, match="template"):
        fill_templates(["a"], [])
    with pytest.raises(ValueError, match="labels"):
        zeroshot_metrics(torch.randn(3, 4), torch.randn(4, 2), torch.zeros(2, dtype=torch.long))
