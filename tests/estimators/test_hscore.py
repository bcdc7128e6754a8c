"""H-score and shrinkage H-score."""

from __future__ import annotations

import numpy as np
import pytest

from advtransfer.estimators import hscore, regularized_hscore


def _hscore_by_hand(f: np.ndarray, y: np.ndarray) -> float:
    """H-score with explicit loops and a plain inverse (full-rank features only)."""
    n, d = f.shape
    mean = [sum(f[i, k] for i in range(n)) / n for k in range(d)]
    cov_f = np.zeros((d, d))
    for i in range(n):
        for a in range(d):
            for b in range(d):
                cov_f[a, b] += (f[i, a] - mean[a]) * (f[i, b] - mean[b]) / (n - 1)
    class_mean = {}
    for c in set(y.tolist()):
        rows = [i for i in range(n) if y[i] == c]
        class_mean[c] = [sum(f[i, k] for i in rows) / len(rows) for k in range(d)]
    cov_g = np.zeros((d, d))
    for i in range(n):
        g = class_mean[y[i]]
        for a in range(d):
            for b in range(d):
                cov_g[a, b] += (g[a] - mean[a]) * (g[b] - mean[b]) / (n - 1)
    return float(np.trace(np.linalg.inv(cov_f) @ cov_g))


def test_hscore_hand_worked_value() -> None:
    f = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    y = np.array([0, 0, 1, 1])
    # mean = (1, 1); centred rows (0,-1), (2,-1), (-1,0), (-1,2) -> scatter [[6,-4],[-4,6]];
    # class means (2,0), (0,2) -> centred (1,-1), (-1,1), each twice -> scatter [[4,-4],[-4,4]].
    # The 1/(n-1) factors cancel: H = tr(1/20 [[6,4],[4,6]] [[4,-4],[-4,4]]) = (8 + 8)/20 = 4/5.
    assert hscore(f, y) == pytest.approx(0.8, rel=1e-12)
    assert hscore(f, y) == pytest.approx(_hscore_by_hand(f, y), rel=1e-12)


def test_hscore_matches_loop_implementation_on_random_data() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=30)
    f = rng.normal(size=(30, 3)) + y[:, None] * np.array([1.0, 0.0, -0.5])
    assert hscore(f, y) == pytest.approx(_hscore_by_hand(f, y), rel=1e-9)


def test_hscore_near_zero_for_features_independent_of_labels() -> None:
    rng = np.random.default_rng(6)
    n = 20000
    f = rng.normal(size=(n, 5))
    y = rng.integers(0, 3, size=n)
    score = hscore(f, y)
    assert 0 <= score < 0.01  # expectation is about D (C - 1) / N = 5e-4


def test_hscore_of_separable_features_approaches_upper_bound() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, size=600)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    f = centres[y] + rng.normal(size=(600, 2))
    assert 1.95 < hscore(f, y) <= 2.0  # min(D, C - 1) = 2


def test_hscore_handles_collinear_features_via_pseudo_inverse() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, size=100)
    base = rng.normal(size=(100, 2)) + y[:, None]
    duplicated = np.hstack([base, base, 2 * base[:, :1]])
    assert hscore(duplicated, y) == pytest.approx(hscore(base, y), rel=1e-6)


def test_regularized_hscore_reduces_to_hscore_with_negligible_shrinkage() -> None:
    rng = np.random.default_rng(9)
    n = 5000
    y = rng.integers(0, 3, size=n)
    # Many samples, few anisotropic dimensions: Ledoit-Wolf chooses a shrinkage of about 0.002.
    f = rng.normal(size=(n, 3)) * np.array([1.0, 2.0, 3.0]) + y[:, None]
    assert regularized_hscore(f, y) == pytest.approx(hscore(f, y), rel=1e-2)


def test_regularized_hscore_is_finite_and_bounded_when_d_exceeds_n() -> None:
    rng = np.random.default_rng(10)
    y = np.repeat([0, 1, 2], 10)
    f = rng.normal(size=(30, 100))
    plain = hscore(f, y)
    shrunk = regularized_hscore(f, y)
    # Without shrinkage the 30 samples span their own space: H-score reaches its maximum C-1.
    assert plain == pytest.approx(2.0, rel=1e-6)
    assert 0 <= shrunk < plain


def test_regularized_hscore_matches_paper_formula() -> None:
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, size=60)
    f = rng.normal(size=(60, 20)) + 0.3 * y[:, None]
    lw = LedoitWolf().fit(f)
    alpha = lw.shrinkage_
    assert 0 < alpha < 1
    g = np.array([f[y == c].mean(axis=0) for c in y])
    g = g - g.mean(axis=0)
    cov_g = g.T @ g / len(f)
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - alpha) * cov_g))
    assert regularized_hscore(f, y) == pytest.approx(expected, rel=1e-9)
