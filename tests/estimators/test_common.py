"""Behaviour shared by every estimator: label renaming, torch inputs and input validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from advtransfer.errors import AdvTransferError
from advtransfer.estimators import (
    gbc,
    hscore,
    leep,
    logme,
    nce,
    regularized_hscore,
    transrate,
)

FEATURE_ESTIMATORS: dict[str, Callable[..., float]] = {
    "logme": logme,
    "hscore": hscore,
    "regularized_hscore": regularized_hscore,
    "transrate": transrate,
    "gbc": gbc,
}


def _data(seed: int = 0, n: int = 90, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    rng.shuffle(labels)
    features = rng.normal(size=(n, d)) + 1.5 * np.eye(3, d)[labels]
    return features.astype(np.float32).astype(np.float64), labels


def _probs(seed: int = 0, n: int = 90, z: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    logits = rng.normal(size=(n, z))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p.astype(np.float32).astype(np.float64)


RENAMED = np.array([7, -3, 100])


@pytest.mark.parametrize("name", sorted(FEATURE_ESTIMATORS))
def test_feature_estimators_invariant_to_label_renaming(name: str) -> None:
    estimator = FEATURE_ESTIMATORS[name]
    features, labels = _data()
    assert estimator(features, RENAMED[labels]) == pytest.approx(
        estimator(features, labels), rel=1e-10, abs=1e-12
    )
    # String labels are class labels too.
    assert estimator(features, np.array(["cat", "dog", "emu"])[labels]) == pytest.approx(
        estimator(features, labels), rel=1e-10, abs=1e-12
    )


def test_leep_invariant_to_label_renaming() -> None:
    _, labels = _data()
    probs = _probs()
    assert leep(probs, RENAMED[labels]) == pytest.approx(leep(probs, labels), rel=1e-12)


def test_nce_invariant_to_renaming_of_either_labelling() -> None:
    _, labels = _data()
    source = _probs().argmax(axis=1)
    source_renamed = np.array([10, 20, 30, 40, -50])[source]
    expected = nce(source, labels)
    assert nce(source_renamed, RENAMED[labels]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(FEATURE_ESTIMATORS))
def test_feature_estimators_accept_torch_float32(name: str) -> None:
    estimator = FEATURE_ESTIMATORS[name]
    features, labels = _data(seed=1)
    from_numpy = estimator(features, labels)
    from_torch = estimator(
        torch.tensor(features, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)
    )
    assert isinstance(from_torch, float)
    assert from_torch == pytest.approx(from_numpy, rel=1e-4, abs=1e-6)


def test_logme_regression_accepts_torch_float32() -> None:
    features, _ = _data(seed=2)
    target = (features @ np.arange(6.0)).astype(np.float32).astype(np.float64)
    from_numpy = logme(features, target, regression=True)
    from_torch = logme(
        torch.tensor(features, dtype=torch.float32),
        torch.tensor(target, dtype=torch.float32),
        regression=True,
    )
    assert from_torch == pytest.approx(from_numpy, rel=1e-4)


def test_leep_and_nce_accept_torch() -> None:
    _, labels = _data(seed=3)
    probs = _probs(seed=3)
    assert leep(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels)) == pytest.approx(
        leep(probs, labels), rel=1e-5
    )
    source = probs.argmax(axis=1)
    assert nce(torch.tensor(source), torch.tensor(labels)) == pytest.approx(
        nce(source, labels), rel=1e-12
    )


def test_results_are_python_floats() -> None:
    features, labels = _data()
    for estimator in FEATURE_ESTIMATORS.values():
        assert type(estimator(features, labels)) is float
    assert type(leep(_probs(), labels)) is float
    assert type(nce(labels, labels)) is float


# --- bad input --------------------------------------------------------------------------------


def _raises(match: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(AdvTransferError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(FEATURE_ESTIMATORS))
def test_feature_estimators_reject_bad_input(name: str) -> None:
    estimator = FEATURE_ESTIMATORS[name]
    features, labels = _data()

    _raises(r"features must be a 2-D array .*got shape \(90,\)", estimator, features[:, 0], labels)
    _raises(r"features must be a 2-D array", estimator, features[None], labels)
    _raises(r"labels must be a 1-D array", estimator, features, labels[:, None])
    _raises(r"features and labels must have the same number of samples; got 90 and 89",
            estimator, features, labels[:-1])  # fmt: skip
    bad = features.copy()
    bad[3, 2] = np.nan
    _raises(r"features must contain only finite values", estimator, bad, labels)
    bad[3, 2] = np.inf
    _raises(r"features must contain only finite values", estimator, bad, labels)
    _raises(r"labels must contain at least 2 distinct classes; got 1",
            estimator, features, np.zeros(90, dtype=int))  # fmt: skip
    _raises(r"features must have at least 2 samples", estimator, features[:1], labels[:1])
    _raises(r"labels must hold class labels", estimator, features, labels + 0.5)
    _raises(r"features must be a numpy array or a torch tensor", estimator, "features", labels)


def test_error_is_a_value_error() -> None:
    features, labels = _data()
    with pytest.raises(ValueError, match="features"):
        hscore(features[:, 0], labels)


def test_logme_regression_rejects_bad_targets() -> None:
    features, _ = _data()
    target = np.ones((90, 2))
    _raises(r"labels must be a 1-D or 2-D array", logme, features, target[None], regression=True)
    _raises(r"same number of samples", logme, features, target[:10], regression=True)
    target[0, 1] = np.nan
    _raises(r"labels must contain only finite values", logme, features, target, regression=True)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf"), "1e-4"])
def test_transrate_rejects_bad_eps(eps: Any) -> None:
    features, labels = _data()
    _raises(r"eps must be a positive finite number", transrate, features, labels, eps=eps)


def test_leep_rejects_bad_probabilities() -> None:
    _, labels = _data()
    probs = _probs()
    negative = probs.copy()
    negative[0, 0], negative[0, 1] = -0.1, negative[0, 1] + negative[0, 0] + 0.1
    _raises(r"source_probs must hold probabilities .*negative", leep, negative, labels)
    _raises(r"source_probs must hold probabilities whose rows sum to 1 .*row 0",
            leep, np.vstack([probs[:1] * 2, probs[1:]]), labels)  # fmt: skip
    _raises(r"source_probs must be a 2-D array", leep, probs[:, 0], labels)
    _raises(r"source_probs and labels must have the same number of samples",
            leep, probs, labels[:5])  # fmt: skip
    bad = probs.copy()
    bad[1, 1] = np.nan
    _raises(r"source_probs must contain only finite values", leep, bad, labels)
    _raises(r"labels must contain at least 2 distinct classes", leep, probs, np.ones(90))
    # Tolerance of 1e-4 on the row sums: float32 round-off is accepted.
    leep(probs * (1 + 5e-5), labels)


def test_nce_rejects_bad_input() -> None:
    _, labels = _data()
    _raises(r"source_labels must be a 1-D array", nce, labels[:, None], labels)
    _raises(r"target_labels must be a 1-D array", nce, labels, labels[None])
    _raises(r"source_labels and target_labels must have the same number of samples",
            nce, labels[:-2], labels)  # fmt: skip
    _raises(r"target_labels must contain at least 2 distinct classes", nce, labels, np.ones(90))
    _raises(r"source_labels must not contain NaN", nce, np.full(90, np.nan), labels)
