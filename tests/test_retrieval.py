"""Retrieval recall@k against a brute-force rank count and CLIP_benchmark's recall code."""

import pytest
import torch

from cliplab.eval.retrieval import retrieval_metrics


def brute_force(images, texts, owner, k):
    images = torch.nn.functional.normalize(images, dim=-1)
    texts = torch.nn.functional.normalize(texts, dim=-1)
    scores = texts @ images.T  # [T, I]
    t2i = []
    for t in range(len(texts)):
        rank = int((scores[t] > scores[t, owner[t]]).sum())  # images strictly better than the right one
        t2i.append(rank < k)
    i2t = []
    for i in range(len(images)):
        own = [t for t in range(len(texts)) if owner[t] == i]
        best = max(scores[t, i] for t in own)
        i2t.append(int((scores[:, i] > best).sum()) < k)
    return sum(i2t) / len(i2t), sum(t2i) / len(t2i)


def make(n_images=40, captions=(1, 2, 3, 5), seed=0, dim=16):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(captions)[torch.randint(len(captions), (n_images,), generator=g)]
    owner = torch.repeat_interleave(torch.arange(n_images), counts)
    owner = owner[torch.randperm(len(owner), generator=g)]
    images = torch.randn(n_images, dim, generator=g)
    texts = images[owner] + 1.5 * torch.randn(len(owner), dim, generator=g)  # noisy captions
    return images, texts, owner


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    images, texts, owner = make(seed=seed)
    got = retrieval_metrics(images, texts, owner, chunk_size=7)
    for k in (1, 5, 10):
        i2t, t2i = brute_force(images, texts, owner, k)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
    assert 0 < got["image_to_text_R@1"] < got["image_to_text_R@10"] <= 1


def test_matches_clip_benchmark():
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    images, texts, owner = make(seed=3)
    nimg = torch.nn.functional.normalize(images, dim=-1)
    ntxt = torch.nn.functional.normalize(texts, dim=-1)
    scores = ntxt @ nimg.T
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(owner)), owner] = True
    got = retrieval_metrics(images, texts, owner)
    for k in (1, 5, 10):
        # CLIP_benchmark names them by what is retrieved: "image retrieval" is text->image
        t2i = (cb.recall_at_k(scores, positives, k) > 0).float().mean().item()
        i2t = (cb.recall_at_k(scores.T, positives.T, k) > 0).float().mean().item()
        assert got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t)


def test_perfect_and_small_gallery():
    feats = torch.eye(3)
    got = retrieval_metrics(feats, feats, [0, 1, 2])
    assert all(v == 1.0 for v in got.values())


def test_bad_index_raises():
    feats = torch.randn(3, 4)
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(feats, feats, [0, 1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(feats, feats, [0, 1, 3])
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(feats, feats, [0, 1, 1])
