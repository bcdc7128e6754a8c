"""TransRate and GBC: direct formula checks and known limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advtransfer.estimators import gbc, transrate


def _transrate_direct(z: np.ndarray, y: np.ndarray, eps: float = 1e-4,
                      center: bool = True) -> float:
    """The reference formula with d x d log-determinants (Huang et al. 2022, authors' code)."""

    def rate(m: np.ndarray) -> float:
        n, d = m.shape
        sign, logdet = np.linalg.slogdet(np.eye(d) + m.T @ m / (n * eps))
        assert sign > 0
        return 0.5 * logdet

    z = z - z.mean(axis=0) if center else z
    classes = np.unique(y)
    return rate(z) - sum(rate(z[y == c]) for c in classes) / len(classes)


def test_transrate_matches_direct_log_determinant_formula() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=50)
    z = rng.normal(size=(50, 6)) + y[:, None]
    assert transrate(z, y, preprocess="center") == pytest.approx(_transrate_direct(z, y),
                                                                 rel=1e-9)
    assert transrate(z, y, eps=0.5, preprocess="center") == pytest.approx(
        _transrate_direct(z, y, eps=0.5), rel=1e-9)


def test_transrate_single_dimension_by_hand() -> None:
    # d = 1, two classes {(-1, 1), (3, 5)}: centred values -3, -1, 1, 3 (sum of squares 20);
    # class 0 -> -3, -1 (sum of squares 10, n=2), class 1 -> 1, 3 (10, n=2).
    z = np.array([[-1.0], [1.0], [3.0], [5.0]])
    y = np.array([0, 0, 1, 1])
    eps = 0.1
    expected = 0.5 * math.log(1 + 20 / (4 * eps)) - 0.5 * (
        0.5 * math.log(1 + 10 / (2 * eps)) + 0.5 * math.log(1 + 10 / (2 * eps))
    )
    assert transrate(z, y, eps=eps, preprocess="center") == pytest.approx(expected, rel=1e-12)
    # standardised: centred values / sd sqrt(5) -> sum of squares 4, class sums of squares 2
    standardized = 0.5 * math.log(1 + 4 / (4 * eps)) - 0.5 * math.log(1 + 2 / (2 * eps))
    assert transrate(z, y, eps=eps, preprocess="standardize") == pytest.approx(standardized,
                                                                               rel=1e-12)
    # Frobenius: centred values / sqrt(20) -> sum of squares 1, class sums of squares 1/2
    frobenius = 0.5 * math.log(1 + 1 / (4 * eps)) - 0.5 * math.log(1 + 0.5 / (2 * eps))
    assert transrate(z, y, eps=eps) == pytest.approx(frobenius, rel=1e-12)


def test_transrate_informative_beats_noise() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=400)
    noise = rng.normal(size=(400, 8))
    informative = noise + 3.0 * np.eye(4)[y] @ rng.normal(size=(4, 8))
    assert transrate(informative, y) > transrate(noise, y) + 0.5


def test_transrate_does_not_depend_on_the_feature_scale() -> None:
    # Issue 8 item 12: on centred-only features, multiplying 16 informative dimensions by 1e-3
    # moved TransRate from 1.33 to 0.0037 (features small against eps); the default Frobenius
    # scaling (the field's benchmark code) removes the overall scale, "standardize" also the
    # scale of each feature.
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 120)
    f = rng.normal(size=(5, 16))[y] + 1.5 * rng.normal(size=(y.size, 16))
    assert transrate(1e-3 * f + 7.0, y) == pytest.approx(transrate(f, y), rel=1e-7)
    assert transrate(1e-3 * f, y, preprocess="center") < 0.01 * transrate(f, y,
                                                                          preprocess="center")
    scales = np.geomspace(1e-4, 1e-2, 16)
    assert transrate(f * scales + 7.0, y, preprocess="standardize") == pytest.approx(
        transrate(f, y, preprocess="standardize"), rel=1e-7)


def test_transrate_preprocessing_options_by_direct_formula() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=60)
    z = rng.normal(size=(60, 5)) * np.array([1.0, 3.0, 0.1, 1.0, 2.0]) + y[:, None]
    c = z - z.mean(axis=0)
    assert transrate(z, y, preprocess="standardize") == pytest.approx(
        _transrate_direct(c / c.std(axis=0), y), rel=1e-9)
    l2 = c / np.linalg.norm(c, axis=1, keepdims=True)
    assert transrate(z, y, preprocess="l2") == pytest.approx(
        _transrate_direct(l2, y, center=False), rel=1e-9)  # rows normalised after centring
    fro = c / np.linalg.norm(c)
    assert transrate(z, y) == pytest.approx(_transrate_direct(fro, y), rel=1e-9)  # default
    from advtransfer.errors import AdvTransferError

    with pytest.raises(AdvTransferError, match="preprocess"):
        transrate(z, y, preprocess="whiten")


def _gbc_by_hand(f: np.ndarray, y: np.ndarray) -> float:
    classes = sorted(set(y.tolist()))
    stats = {}
    for c in classes:
        rows = f[y == c]
        mean = [sum(r[k] for r in rows) / len(rows) for k in range(f.shape[1])]
        var = [
            max(sum((r[k] - mean[k]) ** 2 for r in rows) / len(rows), 1e-4)
            for k in range(f.shape[1])
        ]
        stats[c] = (mean, var)
    total = 0.0
    for a in classes:
        for b in classes:
            if a == b:
                continue
            (m1, v1), (m2, v2) = stats[a], stats[b]
            det1 = math.prod(v1)
            det2 = math.prod(v2)
            avg = [(p + q) / 2 for p, q in zip(v1, v2, strict=True)]
            d_b = sum((p - q) ** 2 / s for p, q, s in zip(m1, m2, avg, strict=True)) / 8
            d_b += 0.5 * math.log(math.prod(avg) / math.sqrt(det1 * det2))
            total += math.exp(-d_b)
    return -total


def test_gbc_matches_loop_implementation() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=30)
    f = rng.normal(size=(30, 4)) * np.array([1.0, 0.5, 2.0, 1.0]) + 0.7 * y[:, None]
    assert gbc(f, y, pca_dim=None) == pytest.approx(_gbc_by_hand(f, y), rel=1e-10)


def test_gbc_two_classes_by_hand() -> None:
    # 1-D, class means 0 and 2, both with variance 1: D_B = (2^2 / 1) / 8 = 0.5, two ordered pairs.
    f = np.array([[-1.0], [1.0], [1.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    assert gbc(f, y) == pytest.approx(-2 * math.exp(-0.5), rel=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_gbc_bounds_and_limits(n_classes: int) -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(n_classes), 40)
    lower = -n_classes * (n_classes - 1)

    separated = rng.normal(size=(y.size, 4)) + 100.0 * y[:, None]
    identical_points = np.tile(rng.normal(size=(40, 4)), (n_classes, 1))
    same_distribution = rng.normal(size=(y.size, 4))

    for f in (separated, identical_points, same_distribution):
        assert lower - 1e-9 <= gbc(f, y) <= 0.0
    assert gbc(separated, y) > -1e-6
    assert gbc(identical_points, y) == pytest.approx(lower, rel=1e-12)
    assert gbc(same_distribution, y) < 0.9 * lower


def test_gbc_variance_floor_keeps_single_sample_classes_finite() -> None:
    f = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    y = np.array([0, 1, 2])
    value = gbc(f, y)
    assert math.isfinite(value)
    # Classes 0 and 1 coincide (BC = 1 both ways); class 2 is far away from both.
    assert value == pytest.approx(-2.0, abs=1e-9)


def _width_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16 informative dimensions (5 Gaussian classes), and a generator for padding."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 120)
    f16 = rng.normal(size=(5, 16))[y] + 1.5 * rng.normal(size=(y.size, 16))
    return f16, y, rng


def test_gbc_does_not_grow_with_feature_width() -> None:
    # Issue 8 item 12: without the published PCA-64 step, the same 16 informative dimensions
    # tiled to 2048 gave GBC -1e-57 instead of -2.9 (every copy adds to D_B), and padding with
    # small noise dimensions to 2048 gave -6e-4 instead of -2.4: GBC ranked by width.
    f16, y, rng = _width_data()
    tiled = np.tile(f16, (1, 128))
    # the principal axes of the tiled features are the tiled axes of f16: identical scores
    assert gbc(tiled, y) == pytest.approx(gbc(f16, y), rel=1e-7)
    pad64 = np.hstack([f16, 0.05 * rng.normal(size=(y.size, 48))])
    pad2048 = np.hstack([f16, 0.05 * rng.normal(size=(y.size, 2032))])
    assert gbc(pad2048, y) == pytest.approx(gbc(pad64, y), rel=0.1)
    assert gbc(pad2048, y) < -1.0  # not driven to 0 by the width


def test_gbc_pca_matches_scikit_learn_pca() -> None:
    from sklearn.decomposition import PCA

    f16, y, rng = _width_data()
    wide = f16 @ rng.normal(size=(16, 300)) + 0.3 * rng.normal(size=(y.size, 300))
    reduced = PCA(n_components=64, svd_solver="full").fit_transform(wide)
    assert gbc(wide, y) == pytest.approx(gbc(reduced, y, pca_dim=None), rel=1e-8)
    reduced8 = PCA(n_components=8, svd_solver="full").fit_transform(wide)
    assert gbc(wide, y, pca_dim=8) == pytest.approx(gbc(reduced8, y, pca_dim=None), rel=1e-8)


def test_gbc_spherical_is_the_released_code_formula() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 30)
    f = rng.normal(size=(90, 5)) * np.array([1.0, 0.3, 2.0, 1.0, 0.5]) + 0.8 * y[:, None]
    stats = {}
    for c in range(3):
        rows = f[y == c]
        stats[c] = (rows.mean(axis=0), float(np.maximum(rows.var(axis=0), 1e-4).mean()))
    total = 0.0
    for a in range(3):
        for b in range(3):
            if a != b:
                (m1, s1), (m2, s2) = stats[a], stats[b]
                avg = (s1 + s2) / 2
                d_b = np.sum((m1 - m2) ** 2) / avg / 8 + 0.5 * (
                    math.log(avg) - 0.5 * math.log(s1) - 0.5 * math.log(s2))
                total += math.exp(-d_b)
    assert gbc(f, y, pca_dim=None, gaussian="spherical") == pytest.approx(-total, rel=1e-10)


@pytest.mark.parametrize(("kwargs", "match"), [({"pca_dim": 0}, "pca_dim"),
                                                ({"pca_dim": 2.5}, "pca_dim"),
                                                ({"gaussian": "full"}, "gaussian")])
def test_gbc_rejects_bad_options(kwargs: dict, match: str) -> None:
    from advtransfer.errors import AdvTransferError

    with pytest.raises(AdvTransferError, match=match):
        gbc(np.zeros((4, 2)), np.array([0, 0, 1, 1]), **kwargs)
