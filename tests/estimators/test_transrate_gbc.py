"""TransRate and GBC: direct formula checks, the published codes' defaults and known limits.

The defaults follow the authors' released code: TransRate's ``preprocess="l2"`` (Long-Kai/TransRate:
normalise every sample, centre, normalise again) and GBC's ``gaussian="spherical"`` with
``pca_dim=64`` (google-research ``stable_transfer``). The previous defaults (``"frobenius"``,
``"diagonal"``) remain options; their values are pinned below as computed by the previous code.
"""

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
    assert transrate(z, y, eps=eps, preprocess="frobenius") == pytest.approx(frobenius,
                                                                             rel=1e-12)
    # l2 (default): -1, 1, 3, 5 -> signs -1, 1, 1, 1 -> centred -1.5, .5, .5, .5 -> -1, 1, 1, 1;
    # R(Z) = 1/2 log(1 + 4 / (4 eps)) and both classes ({-1, 1}, {1, 1}) have the same rate.
    assert transrate(z, y, eps=eps) == pytest.approx(0.0, abs=1e-12)


def test_transrate_l2_two_dimensions_by_hand() -> None:
    # Samples on the axes with different lengths: the first normalisation gives +-e1, +-e2 (mean
    # 0), so Z^T Z = diag(2, 2) with n = 4, and each class {e1, -e1}, {e2, -e2} has
    # Z_c^T Z_c = diag(2, 0) with n_c = 2.
    z = np.array([[2.0, 0.0], [0.0, 1.0], [-3.0, 0.0], [0.0, -4.0]])
    y = np.array([0, 1, 0, 1])
    eps = 0.1
    expected = math.log(1 + 2 / (4 * eps)) - 0.5 * math.log(1 + 2 / (2 * eps))
    assert transrate(z, y, eps=eps) == pytest.approx(expected, rel=1e-12)
    assert transrate(z, y, eps=eps, preprocess="l2") == transrate(z, y, eps=eps)


def test_transrate_informative_beats_noise() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=400)
    noise = rng.normal(size=(400, 8))
    informative = noise + 3.0 * np.eye(4)[y] @ rng.normal(size=(4, 8))
    assert transrate(informative, y) > transrate(noise, y) + 0.5


def test_transrate_does_not_depend_on_the_feature_scale() -> None:
    # Issue 8 item 12: on centred-only features, multiplying 16 informative dimensions by 1e-3
    # moved TransRate from 1.33 to 0.0037 (features small against eps). The default "l2"
    # (authors' code) removes the scale of every sample, "frobenius" the overall scale and
    # translation, "standardize" also the scale of each feature.
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 120)
    f = rng.normal(size=(5, 16))[y] + 1.5 * rng.normal(size=(y.size, 16))
    per_sample = rng.uniform(1e-3, 1e3, size=(y.size, 1))
    assert transrate(per_sample * f, y) == pytest.approx(transrate(f, y), rel=1e-7)
    assert transrate(1e-3 * f + 7.0, y, preprocess="frobenius") == pytest.approx(
        transrate(f, y, preprocess="frobenius"), rel=1e-7)
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
    # l2 (default): rows normalised, centred, rows normalised again (authors' order)
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    u = u - u.mean(axis=0)
    l2 = u / np.linalg.norm(u, axis=1, keepdims=True)
    assert transrate(z, y, preprocess="l2") == pytest.approx(
        _transrate_direct(l2, y, center=False), rel=1e-9)
    assert transrate(z, y) == transrate(z, y, preprocess="l2")  # the default
    fro = c / np.linalg.norm(c)
    assert transrate(z, y, preprocess="frobenius") == pytest.approx(_transrate_direct(fro, y),
                                                                    rel=1e-9)
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
    # _gbc_by_hand is the diagonal-covariance formula (this library's default before).
    assert gbc(f, y, pca_dim=None, gaussian="diagonal") == pytest.approx(_gbc_by_hand(f, y),
                                                                        rel=1e-10)


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
    # tiled to 2048 gave (diagonal) GBC -1e-57 instead of -2.9 (every copy adds to D_B), and
    # padding with small noise dimensions to 2048 gave -6e-4 instead of -2.4: GBC ranked by width.
    from advtransfer.estimators.gbc import pca_reduce

    f16, y, rng = _width_data()
    tiled = np.tile(f16, (1, 128))
    pad64 = np.hstack([f16, 0.05 * rng.normal(size=(y.size, 48))])
    pad2048 = np.hstack([f16, 0.05 * rng.normal(size=(y.size, 2032))])
    # gbc(x, y) is gbc(pca_reduce(x, 64), y, pca_dim=None); one SVD per wide matrix keeps this
    # test fast (the first k of the 64 scores are the k-component scores).
    tiled64 = pca_reduce(tiled, 64)
    assert gbc(tiled64, y, pca_dim=None) == gbc(tiled, y)
    pad2048_64 = pca_reduce(pad2048, 64)
    # Diagonal: the principal axes of the tiled features are the tiled axes of f16 (the other
    # 48 components are empty and floored alike in every class): identical scores.
    assert gbc(tiled64, y, pca_dim=None, gaussian="diagonal") == pytest.approx(
        gbc(f16, y, gaussian="diagonal"), rel=1e-7)
    wide = gbc(pad2048_64, y, pca_dim=None, gaussian="diagonal")
    assert wide == pytest.approx(gbc(pad64, y, gaussian="diagonal"), rel=0.1)
    assert wide < -1.0  # not driven to 0 by the width
    # Spherical (default): the class variance is averaged over the 64 components, so rank-16
    # features are compared with the same number of components (pca_dim=16) ...
    assert gbc(tiled64[:, :16], y, pca_dim=None) == pytest.approx(gbc(f16, y), rel=1e-7)
    # ... and full-rank features of any width score alike, where without PCA they do not.
    wide = gbc(pad2048_64, y, pca_dim=None)
    assert wide == pytest.approx(gbc(pad64, y), rel=0.15)
    assert wide < -0.02
    assert gbc(pad2048, y, pca_dim=None) > -1e-30


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
                                                ({"gaussian": "full"}, "gaussian"),
                                                ({"pca_dim": True}, "pca_dim"),
                                                ({"pca_dim": -1}, "pca_dim")])
def test_gbc_rejects_bad_options(kwargs: dict, match: str) -> None:
    from advtransfer.errors import AdvTransferError

    with pytest.raises(AdvTransferError, match=match):
        gbc(np.zeros((4, 2)), np.array([0, 0, 1, 1]), **kwargs)


# ---------------------------------------------------------------------------------------------
# The published codes' defaults, step by step, and the previous defaults as options
# ---------------------------------------------------------------------------------------------


def _transrate_authors_steps(f: np.ndarray, y: np.ndarray, eps: float = 1e-4,
                             weights: str = "size") -> float:
    """Long-Kai/TransRate, literally: experiment_builder_get_eigens.py (torch normalize, then
    centre), transrate.py pre_transrate (normalise rows, eigenvalues of Z^T Z / n and of every
    Z_c^T Z_c / n_c via SVD) and extract_result_utils.py process_transrate_logs (reg=1,
    opt_active_eigs='all', normalize_eigz=True, without the rank normalisation). ``weights`` is
    the conditional rate's class weighting: the repository's n_c / n ("size") or 1 / C."""
    n, d = f.shape
    z = np.array(f, dtype=np.float64)
    for i in range(n):  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
        z[i] = z[i] / max(math.sqrt(sum(v * v for v in z[i])), 1e-12)
    z = z - z.mean(axis=0, keepdims=True)
    for i in range(n):
        z[i] = z[i] / math.sqrt(sum(v * v for v in z[i]))
    classes = sorted(set(y.tolist()))
    zz = np.zeros((d, d))
    eig_c, n_c = [], []
    for c in classes:
        zc = z[y == c]
        zzc = zc.T @ zc
        zz = zz + zzc
        n_c.append(zc.shape[0])
        eig_c.append(np.linalg.svd(zzc / zc.shape[0], compute_uv=False))
    eig_z = np.linalg.svd(zz / n, compute_uv=False)
    total = float(np.sum(eig_z))
    assert total == pytest.approx(1.0, rel=1e-12)  # so normalize_eigz=True changes nothing
    eig_z = eig_z / total
    rz = sum(math.log(1.0 + e / eps) for e in eig_z)
    rzc = [sum(math.log(1.0 + e / total / eps) for e in eigs) for eigs in eig_c]
    if weights == "size":
        conditional = sum(r * k / n for r, k in zip(rzc, n_c, strict=True))
    else:
        conditional = sum(rzc) / len(rzc)
    return rz / 2.0 - conditional / 2.0


def test_transrate_default_is_the_authors_pipeline() -> None:
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 25)  # balanced: n_c / n = 1 / C
    rng.shuffle(y)
    f = (rng.normal(size=(100, 12)) * rng.uniform(0.2, 3.0, size=12)
         + 1.3 * rng.normal(size=(4, 12))[y] + 0.5) * rng.uniform(0.5, 4.0, size=(100, 1))
    expected = _transrate_authors_steps(f, y)
    assert transrate(f, y) == pytest.approx(expected, rel=1e-8)
    assert transrate(f, y, eps=1e-2) == pytest.approx(_transrate_authors_steps(f, y, 1e-2),
                                                      rel=1e-8)
    # Unbalanced classes: this implementation weights the class rates by 1 / C (the paper's
    # appendix listing); the repository's n_c / n differs.
    yu = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert transrate(f, yu) == pytest.approx(_transrate_authors_steps(f, yu, weights="class"),
                                             rel=1e-8)
    assert transrate(f, yu) != pytest.approx(_transrate_authors_steps(f, yu), rel=1e-3)


def _tr_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240602)
    y = rng.integers(0, 3, size=75)
    scales = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 0.2, 1.0])
    return rng.normal(size=(75, 7)) * scales + 0.8 * y[:, None] + 2.0, y


def test_transrate_previous_default_is_the_frobenius_option() -> None:
    f, y = _tr_data()
    old = 0.4660311466808631  # transrate(f, y) computed by the previous code (default frobenius)
    assert transrate(f, y, preprocess="frobenius") == pytest.approx(old, rel=1e-10)
    c = f - f.mean(axis=0)
    assert transrate(f, y, preprocess="frobenius") == pytest.approx(
        _transrate_direct(c / np.linalg.norm(c), y), rel=1e-9)
    assert transrate(f, y) != pytest.approx(old, rel=1e-3)  # the default did change


@pytest.mark.parametrize("preprocess", ["l2", "frobenius", "standardize", "center"])
def test_transrate_invariances(preprocess: str) -> None:
    f, y = _tr_data()
    rng = np.random.default_rng(3)
    base = transrate(f, y, preprocess=preprocess)
    order = rng.permutation(y.size)
    assert transrate(f[order], y[order], preprocess=preprocess) == pytest.approx(base, rel=1e-9)
    names = np.array([20, -4, 7])
    assert transrate(f, names[y], preprocess=preprocess) == pytest.approx(base, rel=1e-12)
    if preprocess != "standardize":  # every option but per-feature scaling is rotation-free
        q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
        assert transrate(f @ q, y, preprocess=preprocess) == pytest.approx(base, rel=1e-8)
    import torch

    assert transrate(torch.tensor(f), torch.tensor(y), preprocess=preprocess) == pytest.approx(
        base, rel=1e-12)


def test_transrate_separable_beats_random() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 40)
    separable = 10.0 * np.eye(3, 6)[y] + 0.1 * rng.normal(size=(120, 6))
    random = rng.normal(size=(120, 6))
    for preprocess in ("l2", "frobenius"):
        assert transrate(separable, y, preprocess=preprocess) > transrate(
            random, y, preprocess=preprocess) + 0.3


@pytest.mark.parametrize(("kwargs", "match"), [({"preprocess": "whiten"}, "preprocess"),
                                                ({"preprocess": None}, "preprocess"),
                                                ({"eps": 0.0}, "eps"),
                                                ({"eps": -1e-4}, "eps"),
                                                ({"eps": math.inf}, "eps"),
                                                ({"eps": True}, "eps")])
def test_transrate_rejects_bad_options(kwargs: dict, match: str) -> None:
    from advtransfer.errors import AdvTransferError

    with pytest.raises(AdvTransferError, match=match):
        transrate(np.eye(4), np.array([0, 0, 1, 1]), **kwargs)


def _gbc_released_code(f: np.ndarray, y: np.ndarray, pca: int | None) -> float:
    """google-research stable_transfer, literally: features_targets_utils.pca_reduction (sklearn
    PCA, svd_solver='full'; kept in float64 here) and gbc.py get_gbc_score with
    gaussian_type='spherical' (per-class mean and population variance floored at 1e-4, then
    reduce_mean; Bhattacharyya distance summed over every ordered pair)."""
    from sklearn.decomposition import PCA

    if pca is not None:
        f = PCA(n_components=pca, svd_solver="full").fit_transform(f)
    stats = {}
    for c in sorted(set(y.tolist())):
        rows = f[y == c]
        mean = rows.mean(axis=0)
        variance = np.maximum(((rows - mean) ** 2).mean(axis=0), 1e-4)
        stats[c] = (mean, float(np.mean(variance)))  # spherical: reduce_mean of the variances
    per_class = []
    for c1 in stats:
        terms = []
        for c2 in stats:
            if c1 != c2:
                (mu1, s1), (mu2, s2) = stats[c1], stats[c2]
                avg = (s1 + s2) / 2
                first = float(np.sum((mu1 - mu2) ** 2 / avg)) / 8
                second = math.log(avg) - 0.5 * math.log(s1) - 0.5 * math.log(s2)
                terms.append(math.exp(-(first + 0.5 * second)))
        per_class.append(sum(terms))
    return -sum(per_class)


def test_gbc_default_is_the_released_code_and_config() -> None:
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(5), 30)
    rng.shuffle(y)
    f = 0.6 * rng.normal(size=(5, 16))[y] @ rng.normal(size=(16, 100)) + rng.normal(
        size=(150, 100)) * rng.uniform(0.1, 2.0, size=100)
    assert gbc(f, y) == pytest.approx(_gbc_released_code(f, y, 64), rel=1e-8)
    assert gbc(f, y) == gbc(f, y, pca_dim=64, gaussian="spherical")
    assert gbc(f, y, pca_dim=None) == pytest.approx(_gbc_released_code(f, y, None), rel=1e-8)


def _gbc_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240601)
    y = np.repeat(np.arange(4), 30)
    f = rng.normal(size=(120, 10)) * np.linspace(0.3, 2.0, 10) + 0.9 * rng.normal(size=(4, 10))[y]
    return f, y


def test_gbc_previous_default_is_the_diagonal_option() -> None:
    from sklearn.decomposition import PCA

    f, y = _gbc_data()
    old = -3.0902384601503936  # gbc(f, y) computed by the previous code (diagonal, PCA-64)
    assert gbc(f, y, gaussian="diagonal") == pytest.approx(old, rel=1e-10)
    # Independently: all 10 principal components by scikit-learn, then the diagonal loop.
    reduced = PCA(n_components=10, svd_solver="full").fit_transform(f)
    assert gbc(f, y, gaussian="diagonal") == pytest.approx(_gbc_by_hand(reduced, y), rel=1e-8)
    assert gbc(f, y) != pytest.approx(old, rel=1e-3)  # the default did change


def test_gbc_spherical_differs_from_the_paper_spherical_log_term() -> None:
    # The released code's log term is 1/2 log(s / sqrt(s_i s_j)), not D/2 log(...): with two
    # classes of equal means and variances 1 and 4 in D = 3 dimensions, D_B = 1/2 log(2.5 / 2).
    f = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [2.0, 2.0, 2.0], [-2.0, -2.0, -2.0]])
    y = np.array([0, 0, 1, 1])
    expected = -2 * math.exp(-0.5 * math.log(2.5 / 2.0))
    assert gbc(f, y, pca_dim=None) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_invariances(gaussian: str) -> None:
    f, y = _gbc_data()
    rng = np.random.default_rng(9)
    base = gbc(f, y, gaussian=gaussian)
    order = rng.permutation(y.size)
    assert gbc(f[order], y[order], gaussian=gaussian) == pytest.approx(base, rel=1e-9)
    names = np.array(["d", "a", "c", "b"])
    assert gbc(f, names[y], gaussian=gaussian) == pytest.approx(base, rel=1e-12)
    # PCA makes both rotation-invariant; without PCA only the spherical form is.
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert gbc(f @ q, y, gaussian=gaussian) == pytest.approx(base, rel=1e-8)
    if gaussian == "spherical":
        assert gbc(f @ q, y, pca_dim=None) == pytest.approx(gbc(f, y, pca_dim=None), rel=1e-8)
    else:
        assert gbc(f @ q, y, pca_dim=None, gaussian=gaussian) != pytest.approx(
            gbc(f, y, pca_dim=None, gaussian=gaussian), rel=1e-3)
    import torch

    assert gbc(torch.tensor(f), torch.tensor(y), gaussian=gaussian) == pytest.approx(
        base, rel=1e-10)


def test_gbc_separable_beats_random() -> None:
    rng = np.random.default_rng(10)
    y = np.repeat(np.arange(3), 40)
    separable = 10.0 * np.eye(3, 6)[y] + 0.1 * rng.normal(size=(120, 6))
    random = rng.normal(size=(120, 6))
    for gaussian in ("spherical", "diagonal"):
        assert gbc(separable, y, gaussian=gaussian) > gbc(random, y, gaussian=gaussian) + 3.0
