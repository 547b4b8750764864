"""Linear probe (and k-shot probe) on frozen image features: logistic regression, C tuned on validation.

As in the CLIP paper's protocol: sweep the inverse regularisation strength C on held-out validation data,
refit on train + validation with the best C, report test accuracy.
"""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

DEFAULT_CS = tuple(float(c) for c in np.logspace(-3, 3, 7))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def k_shot_indices(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Up to k random examples of every class (all of a class that has fewer), sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def _split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = max(1, int(round(fraction * len(labels))))
    if n_val >= len(labels):
        raise ValueError("too few training examples to split off a validation set")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _fit(x, y, c, max_iter, seed):
    return LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x, y)


def linear_probe(
    train_features,
    train_labels,
    val_features=None,
    val_labels=None,
    test_features=None,
    test_labels=None,
    cs: Sequence[float] = DEFAULT_CS,
    k_shot: int | None = None,
    val_fraction: float = 0.2,
    normalize: bool = True,
    refit: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Best C by validation accuracy, then test top-1 and mean per-class recall.

    Without validation data, `val_fraction` of the training set is held out. With `k_shot`, only k examples
    per class of the training (and validation) data are used. Returns `best_C`, `val_top1`, and with test data
    `test_top1` and `test_mean_recall`.
    """
    x_train, y_train = _np(train_features).astype(np.float32), _np(train_labels)
    if val_features is None:
        train_idx, val_idx = _split_validation(y_train, val_fraction, seed)
        x_val, y_val = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    else:
        x_val, y_val = _np(val_features).astype(np.float32), _np(val_labels)
    if k_shot is not None:
        keep = k_shot_indices(y_train, k_shot, seed)
        x_train, y_train = x_train[keep], y_train[keep]
        keep = k_shot_indices(y_val, k_shot, seed + 1)
        x_val, y_val = x_val[keep], y_val[keep]
    if len(np.unique(y_train)) < 2:
        raise ValueError("linear probe needs at least two classes in the training data")

    def prep(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) if normalize else x

    x_train, x_val = prep(x_train), prep(x_val)
    scores = [(_fit(x_train, y_train, c, max_iter, seed).score(x_val, y_val), c) for c in cs]
    best_score, best_c = max(scores, key=lambda s: (s[0], -s[1]))  # ties: the stronger regularisation
    result = {"best_C": float(best_c), "val_top1": float(best_score)}

    if test_features is not None:
        if refit:
            clf = _fit(
                np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), best_c, max_iter, seed
            )
        else:
            clf = _fit(x_train, y_train, best_c, max_iter, seed)
        x_test, y_test = prep(_np(test_features).astype(np.float32)), _np(test_labels)
        pred = clf.predict(x_test)
        result["test_top1"] = float((pred == y_test).mean())
        result["test_mean_recall"] = float(balanced_accuracy_score(y_test, pred))
    return result
