"""Linear probe: learns separable features, sweeps C on validation, k-shot keeps k per class."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from cliplab.eval.linear_probe import k_shot_indices, linear_probe


def blobs(n_per_class=40, classes=4, dim=8, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    labels = np.repeat(np.arange(classes), n_per_class)
    feats = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return torch.tensor(feats, dtype=torch.float32), torch.tensor(labels)


def test_separable_features_probe_well():
    xtr, ytr = blobs(seed=0)
    xte, yte = blobs(n_per_class=20, seed=0)  # same centres, fresh noise
    xte = xte + 0.01 * torch.randn_like(xte)
    out = linear_probe(xtr, ytr, test_features=xte, test_labels=yte)
    assert out["test_top1"] > 0.9 and out["val_top1"] > 0.9
    assert out["best_C"] in np.logspace(-3, 3, 7)


def test_best_c_is_the_validation_argmax():
    xtr, ytr = blobs(spread=2.5, seed=1)
    xva, yva = blobs(n_per_class=15, spread=2.5, seed=1)
    cs = (0.001, 0.1, 10.0)
    out = linear_probe(xtr, ytr, xva, yva, cs=cs, normalize=False)
    scores = [
        LogisticRegression(C=c, max_iter=1000, random_state=0)
        .fit(xtr.numpy(), ytr.numpy())
        .score(xva.numpy(), yva.numpy())
        for c in cs
    ]
    assert out["val_top1"] == pytest.approx(max(scores))
    assert out["best_C"] == cs[int(np.argmax(scores))]


def test_k_shot():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    idx = k_shot_indices(labels, 4)
    assert np.bincount(labels[idx]).tolist() == [4, 3, 4]
    xtr, ytr = blobs(seed=2)
    out = linear_probe(xtr, ytr, k_shot=2, test_features=xtr, test_labels=ytr)
    assert 0.0 <= out["test_top1"] <= 1.0


def test_single_class_raises():
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
