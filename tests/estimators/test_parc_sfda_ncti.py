"""PARC, SFDA and NCTI: naive re-implementations of the published code, hand cases, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from advtransfer.errors import AdvTransferError
from advtransfer.estimators.ncti import NCTIParts, ncti, ncti_parts
from advtransfer.estimators.parc import parc
from advtransfer.estimators.sfda import sfda

# ---------------------------------------------------------------------------------------------
# fixtures


def _blobs(seed: int, n: int = 60, d: int = 8, c: int = 3, sep: float = 1.0,
           scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    x = scale * (rng.normal(size=(n, d)) + sep * rng.normal(size=(c, d))[y])
    return x, y


def _separable_and_random(seed: int, n: int = 90, d: int = 10,
                          c: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = 10.0 * rng.normal(size=(c, d))
    separable = centres[y] + 0.3 * rng.normal(size=(n, d))
    random = rng.normal(size=(n, d))
    return separable, random, y


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# ---------------------------------------------------------------------------------------------
# PARC


def _pearson(a: list[float], b: list[float]) -> float:
    n = len(a)
    ma = sum(a) / n
    mb = sum(b) / n
    cov = sum((a[i] - ma) * (b[i] - mb) for i in range(n))
    va = sum((a[i] - ma) ** 2 for i in range(n))
    vb = sum((b[i] - mb) ** 2 for i in range(n))
    return cov / math.sqrt(va * vb)


def _average_ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _parc_naive(x: np.ndarray, y: np.ndarray, pca_dim: int | None = 32,
                solver: str = "randomized", seed: int = 1919) -> float:
    """dbolya/parc methods.py PARC, step by step, with loops."""
    n = x.shape[0]
    if pca_dim is not None:
        k = min(pca_dim, n - 1, x.shape[1])
        if solver == "randomized":  # the code's feature_reduce
            x = PCA(n_components=k, svd_solver="randomized", random_state=seed,
                    iterated_power=1).fit_transform(x)
        else:  # exact PCA with scikit-learn's sign convention (largest loading positive)
            xc = x - x.mean(axis=0)
            _, _, vt = np.linalg.svd(xc, full_matrices=False)
            signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
            x = xc @ (vt[:k] * signs[:k, None]).T
    cols = x.shape[1]
    z = np.empty_like(x)
    for j in range(cols):  # StandardScaler
        col = [float(x[i, j]) for i in range(n)]
        m = sum(col) / n
        sd = math.sqrt(sum((v - m) ** 2 for v in col) / n)
        for i in range(n):
            z[i, j] = (col[i] - m) / sd
    c = int(y.max()) + 1
    onehot = np.eye(c)[y]
    dist_f: list[float] = []
    dist_y: list[float] = []
    for i in range(n):
        for j in range(i + 1, n):
            dist_f.append(1.0 - _pearson(list(z[i]), list(z[j])))
            dist_y.append(1.0 - _pearson(list(onehot[i]), list(onehot[j])))
    return 100.0 * _pearson(_average_ranks(dist_f), _average_ranks(dist_y))


@pytest.mark.parametrize("solver", ["randomized", "full"])
def test_parc_matches_naive_reference_steps(solver: str) -> None:
    x, y = _blobs(0, n=36, d=12, c=3, sep=0.7)
    assert parc(x, y, pca_dim=6, pca_solver=solver) == pytest.approx(
        _parc_naive(x, y, 6, solver), rel=1e-8)
    assert parc(x, y, pca_dim=None) == pytest.approx(_parc_naive(x, y, None), rel=1e-8)


def test_parc_two_features_by_hand() -> None:
    # Two coordinates: the correlation of two standardised samples is the sign of the product
    # of their coordinate differences. Standardised differences of the rows below have signs
    # (-, -, +, +), so D_F over the pairs (01, 02, 03, 12, 13, 23) is (0, 2, 2, 2, 2, 0).
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    assert parc(x, [0, 0, 1, 1], pca_dim=None) == pytest.approx(100.0, rel=1e-12)
    # Labels (0, 1, 0, 1): D_Y = (2, 0, 2, 2, 0, 2); both binary, so Spearman is the phi
    # coefficient: (2/6 - 4/9) / (2/9) = -1/2.
    assert parc(x, [0, 1, 0, 1], pca_dim=None) == pytest.approx(-50.0, rel=1e-12)
    assert parc(x, [0, 1, 0, 1], pca_dim=None, percent=False) == pytest.approx(-0.5, rel=1e-12)


def test_parc_separable_beats_random() -> None:
    separable, random, y = _separable_and_random(1)
    assert parc(separable, y) > parc(random, y) + 30.0


def test_parc_invariances_and_torch() -> None:
    x, y = _blobs(2, n=50, d=40, c=4, sep=0.6)
    base = parc(x, y)
    perm_labels = np.array([7, -1, 3, 12])[y]
    assert parc(x, perm_labels) == pytest.approx(base, rel=1e-12)
    assert parc(x, [f"c{v}" for v in y]) == pytest.approx(base, rel=1e-12)
    order = np.random.default_rng(3).permutation(len(y))
    assert parc(x[order], y[order]) == pytest.approx(base, rel=1e-8)
    assert parc(x[order], y[order], pca_solver="full") == pytest.approx(
        parc(x, y, pca_solver="full"), rel=1e-8)
    assert parc(torch.from_numpy(x), torch.from_numpy(y)) == base
    assert parc(torch.from_numpy(x).float(), y) == pytest.approx(
        parc(x.astype(np.float32), y), rel=1e-12)


def test_parc_is_not_rotation_invariant_without_pca() -> None:
    # Documented: per-column standardisation and per-sample centring depend on the basis.
    x, y = _blobs(4, n=40, d=6, c=2, sep=0.5)
    assert parc(x @ _rotation(6, 5), y, pca_dim=None) != pytest.approx(
        parc(x, y, pca_dim=None), rel=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pca_dim": 1}, "pca_dim"), ({"pca_dim": -1}, "pca_dim"), ({"pca_dim": 2.5}, "pca_dim"),
    ({"pca_dim": True}, "pca_dim"), ({"pca_solver": "arpack"}, "pca_solver"),
    ({"random_state": -1}, "random_state"), ({"random_state": 1.5}, "random_state"),
    ({"percent": 1}, "percent"),
])
def test_parc_rejects_bad_options(kwargs: dict, match: str) -> None:
    x, y = _blobs(0, n=20, d=5)
    with pytest.raises(AdvTransferError, match=match):
        parc(x, y, **kwargs)


def test_parc_rejects_bad_data() -> None:
    x, y = _blobs(0, n=20, d=5)
    with pytest.raises(AdvTransferError, match="features"):
        parc(x[:, 0], y)
    with pytest.raises(AdvTransferError, match="features"):
        parc(x[:2], y[:2])
    with pytest.raises(AdvTransferError, match="features"):
        parc(x[:, :1], y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(AdvTransferError, match="features"):
        parc(bad, y)
    with pytest.raises(AdvTransferError, match="labels"):
        parc(x, np.zeros(20))
    with pytest.raises(AdvTransferError, match="labels"):
        parc(x, np.arange(20))
    with pytest.raises(AdvTransferError, match="features and labels"):
        parc(x, y[:-1])
    flat = x.copy()
    flat[3] = np.delete(x, 3, axis=0).mean(axis=0)  # equal to the column means: standardised 0
    with pytest.raises(AdvTransferError, match="features"):
        parc(flat, y, pca_dim=None)


# ---------------------------------------------------------------------------------------------
# SFDA


def _iterative_a(a: np.ndarray, max_iterations: int = 3) -> float:
    x = a.sum(axis=1)
    y = x
    for _ in range(max_iterations):
        t = a @ x
        y = t / np.linalg.norm(t)
        t = a @ y
        x = t / np.linalg.norm(t)
    return float(x @ a @ y)


class _NaiveSFDA:
    """TencentARC/SFDA metrics.py class SFDA, step by step."""

    def __init__(self, shrinkage: float | None = None, eigenvalue: str = "power") -> None:
        self.shrinkage = shrinkage
        self.eigenvalue = eigenvalue

    def fit(self, x: np.ndarray, y: np.ndarray) -> _NaiveSFDA:
        n, d = x.shape
        classes = sorted(set(int(v) for v in y))
        self.priors = np.array([np.sum(y == c) / n for c in classes])
        self.means = np.array([x[y == c].mean(axis=0) for c in classes])
        sw = np.zeros((d, d))
        for idx, c in enumerate(classes):
            sw += self.priors[idx] * np.atleast_2d(np.cov(x[y == c].T, bias=True))
        if self.shrinkage is None:
            top = _iterative_a(sw) if self.eigenvalue == "power" else np.linalg.eigvalsh(sw)[-1]
            self.shrinkage = max(float(np.exp(-5 * top)), 1e-10)
        lam = self.shrinkage
        st = np.cov(x.T, bias=True)
        st = (1 - lam) * st + lam * np.trace(st) / d * np.eye(d)
        sw_s = (1 - lam) * sw + lam * np.trace(sw) / d * np.eye(d)
        evals, evecs = linalg.eigh(st - sw_s, sw_s)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        self.coef = self.means @ evecs @ evecs.T
        self.intercept = -0.5 * np.diag(self.means @ self.coef.T) + np.log(self.priors)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = x @ self.coef.T + self.intercept
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)


def _sfda_naive(x: np.ndarray, y: np.ndarray, shrinkage: float | None = None,
                eigenvalue: str = "power", log: bool = False) -> float:
    x = x.copy()
    n = len(y)
    c = int(y.max()) + 1
    first = _NaiveSFDA(shrinkage, eigenvalue).fit(x, y)
    prob = first.predict_proba(x)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.array([x[y == k].mean(axis=0) for k in range(c)])
    outer = np.array([(means.sum(axis=0) - means[k]) / (c - 1) for k in range(c)])
    for k in range(c):
        idx = np.where(y == k)[0]
        t = prob[idx, k][:, None]
        x[idx] = t * x[idx] + (1 - t) * outer[k]
    prob = _NaiveSFDA(first.shrinkage).fit(x, y).predict_proba(x)
    true = prob[np.arange(n), y]
    return float(np.mean(np.log(true))) if log else float(np.sum(true) / n)


@pytest.mark.parametrize("scale", [0.15, 1.0])  # lambda about 0.7 / at its 1e-10 floor
def test_sfda_matches_naive_reference_steps(scale: float) -> None:
    x, y = _blobs(5, n=60, d=6, c=3, sep=0.8, scale=scale)
    assert sfda(x, y) == pytest.approx(_sfda_naive(x, y), rel=1e-8)
    assert sfda(x, y, eigenvalue="exact") == pytest.approx(
        _sfda_naive(x, y, eigenvalue="exact"), rel=1e-8)
    assert sfda(x, y, shrinkage=0.3, score="log") == pytest.approx(
        _sfda_naive(x, y, shrinkage=0.3, log=True), rel=1e-8)


def test_sfda_does_not_modify_its_input() -> None:
    x, y = _blobs(6, n=30, d=4)
    copy = x.copy()
    sfda(x, y)
    np.testing.assert_array_equal(x, copy)


def test_sfda_one_dimension_by_hand() -> None:
    # D = 1: the shrunk scatter equals S_W whatever lambda. Class 0 = {0, 2}, class 1 = {4, 6}:
    # S_W = 1, means 1 and 5, equal priors, so logit_1 - logit_0 = 4x - 12.
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    p1 = [sig(4 * v - 12) for v in (0.0, 2.0, 4.0, 6.0)]
    p_true = [1 - p1[0], 1 - p1[1], p1[2], p1[3]]
    t = [sig(2 * p - 1) for p in p_true]  # softmax of (p, 1 - p) at p
    outer = [5.0, 5.0, 1.0, 1.0]  # mean of the other class
    mixed = [t[i] * v + (1 - t[i]) * outer[i] for i, v in enumerate((0.0, 2.0, 4.0, 6.0))]
    m0, m1 = (mixed[0] + mixed[1]) / 2, (mixed[2] + mixed[3]) / 2
    sw = sum((v - m) ** 2 for v, m in zip(mixed, (m0, m0, m1, m1), strict=True)) / 4
    logit = [((m1 - m0) * v - (m1**2 - m0**2) / 2) / sw for v in mixed]
    expected = (1 - sig(logit[0]) + 1 - sig(logit[1]) + sig(logit[2]) + sig(logit[3])) / 4
    assert sfda(x, y) == pytest.approx(expected, rel=1e-12)
    assert sfda(x, y, shrinkage=0.9) == pytest.approx(expected, rel=1e-12)


def test_sfda_separable_beats_random() -> None:
    separable, random, y = _separable_and_random(7)
    assert sfda(separable, y) > 0.95
    assert sfda(separable, y) > sfda(random, y) + 0.3
    assert sfda(separable, y, score="log") > sfda(random, y, score="log")


def test_sfda_invariances_and_torch() -> None:
    x, y = _blobs(8, n=60, d=5, c=3, sep=0.7, scale=0.2)  # lambda well above its floor
    base = sfda(x, y)
    assert sfda(x, np.array([9, 2, -4])[y]) == pytest.approx(base, rel=1e-10)
    order = np.random.default_rng(9).permutation(len(y))
    assert sfda(x[order], y[order]) == pytest.approx(base, rel=1e-10)
    assert sfda(x + 3.0, y) == pytest.approx(base, rel=1e-8)
    rot = _rotation(5, 10)
    exact = sfda(x, y, eigenvalue="exact")
    assert sfda(x @ rot, y, eigenvalue="exact") == pytest.approx(exact, rel=1e-8)
    assert sfda(x @ rot, y, shrinkage=0.2) == pytest.approx(sfda(x, y, shrinkage=0.2), rel=1e-8)
    assert sfda(7.0 * x, y, shrinkage=0.2) == pytest.approx(sfda(x, y, shrinkage=0.2),
                                                            rel=1e-8)
    assert sfda(torch.from_numpy(x), torch.from_numpy(y)) == base


def test_sfda_power_iteration_falls_back_when_rows_sum_to_zero() -> None:
    # Features whose coordinates sum to a constant (e.g. probabilities) give a scatter matrix
    # with zero row sums: the code's power iteration returns NaN; here the exact value is used.
    x, y = _blobs(11, n=40, d=4, c=2, scale=0.3)
    x = np.hstack([x, 1.0 - x.sum(axis=1, keepdims=True)])
    value = sfda(x, y)
    assert math.isfinite(value)
    assert value == pytest.approx(sfda(x, y, eigenvalue="exact"), rel=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shrinkage": -0.1}, "shrinkage"), ({"shrinkage": 1.5}, "shrinkage"),
    ({"shrinkage": "auto"}, "shrinkage"), ({"shrinkage": True}, "shrinkage"),
    ({"eigenvalue": "svd"}, "eigenvalue"), ({"score": "nll"}, "score"),
])
def test_sfda_rejects_bad_options(kwargs: dict, match: str) -> None:
    x, y = _blobs(0, n=20, d=3)
    with pytest.raises(AdvTransferError, match=match):
        sfda(x, y, **kwargs)


def test_sfda_rejects_bad_data() -> None:
    x, y = _blobs(0, n=20, d=3)
    with pytest.raises(AdvTransferError, match="features"):
        sfda(x.ravel(), y)
    bad = x.copy()
    bad[1, 1] = np.inf
    with pytest.raises(AdvTransferError, match="features"):
        sfda(bad, y)
    with pytest.raises(AdvTransferError, match="labels"):
        sfda(x, np.ones(20))
    with pytest.raises(AdvTransferError, match="features and labels"):
        sfda(x, y[:-2])
    collapsed = np.eye(3)[y]  # no within-class variation at all
    with pytest.raises(AdvTransferError, match="features"):
        sfda(collapsed, y)


# ---------------------------------------------------------------------------------------------
# NCTI


def _ncti_parts_naive(x: np.ndarray, y: np.ndarray, k: int = 64,
                      log: bool = True) -> NCTIParts:
    """BUserName/NCTI metrics.py NCTI_Score with scikit-learn, plus loops for the norms."""
    c = int(y.max()) + 1
    pca = PCA(n_components=k, svd_solver="full")
    x = pca.fit_transform(x, y)
    temp = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
    if temp == 1e-10:
        clf = LinearDiscriminantAnalysis(solver="svd")
    else:
        clf = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(temp))
    low = clf.fit_transform(x, y)
    low = low - low.mean(axis=0, keepdims=True)
    seli = float(np.linalg.norm(low, ord="nuc"))
    pred = clf.predict_proba(x)
    ncc = sum(float(pred[i, y[i]]) for i in range(len(y))) / len(y)
    nuc = 0.0
    for cls in range(c):
        nuc += float(np.linalg.norm(pred[y == cls], ord="nuc"))
    return NCTIParts(vc=-math.log(nuc) if log else -nuc, seli=seli, ncc=ncc)


def _assert_parts_close(a: NCTIParts, b: NCTIParts, rel: float) -> None:
    assert a.vc == pytest.approx(b.vc, rel=rel)
    assert a.seli == pytest.approx(b.seli, rel=rel)
    assert a.ncc == pytest.approx(b.ncc, rel=rel)


@pytest.mark.parametrize("scale", [0.05, 1.0])  # shrunk ("eigen") / unshrunk ("svd") branch
def test_ncti_parts_match_reference_code(scale: float) -> None:
    x, y = _blobs(12, n=90, d=20, c=4, sep=0.8, scale=scale)
    _assert_parts_close(ncti_parts(x, y, pca_dim=16), _ncti_parts_naive(x, y, 16), 1e-8)
    _assert_parts_close(ncti_parts(x, y, pca_dim=16, vc_log=False),
                        _ncti_parts_naive(x, y, 16, log=False), 1e-8)


def test_ncti_parts_two_classes_and_no_pca() -> None:
    x, y = _blobs(13, n=40, d=6, c=2, sep=1.0, scale=0.05)
    parts = ncti_parts(x, y, pca_dim=None)
    _assert_parts_close(parts, _ncti_parts_naive(x, y, 6), 1e-8)  # PCA keeping all = rotation
    assert 0.0 < parts.ncc <= 1.0


def test_ncti_pool_normalisation_by_hand() -> None:
    parts = [NCTIParts(vc=-2.0, seli=10.0, ncc=0.5), NCTIParts(vc=-1.0, seli=30.0, ncc=0.9),
             NCTIParts(vc=-1.5, seli=20.0, ncc=0.6)]
    # vc -> (0, 1, .5); seli -> (0, 1, .5); ncc -> (0, 1, .25)
    assert ncti(parts) == pytest.approx([0.0, 3.0, 1.25], rel=1e-12)
    # The code's score (norm seli + norm ncc - norm log nuclear) is ours minus 1.
    log_nuc = np.array([2.0, 1.0, 1.5])
    code = ((np.array([10.0, 30, 20]) - 10) / 20 + (np.array([0.5, 0.9, 0.6]) - 0.5) / 0.4
            - (log_nuc - 1.0) / 1.0)
    assert np.asarray(ncti(parts)) - 1.0 == pytest.approx(code, rel=1e-12)


def test_ncti_single_candidate_and_constant_terms() -> None:
    assert ncti([NCTIParts(vc=-1.0, seli=5.0, ncc=0.7)]) == [0.0]
    parts = [NCTIParts(vc=-1.0, seli=5.0, ncc=0.7), NCTIParts(vc=-1.0, seli=7.0, ncc=0.7)]
    assert ncti(parts) == [0.0, 1.0]
    assert ncti(parts + parts[:1]) == [0.0, 1.0, 0.0]


def test_ncti_is_equivariant_to_candidate_order() -> None:
    rng = np.random.default_rng(14)
    parts = [NCTIParts(*map(float, rng.normal(size=3))) for _ in range(5)]
    base = ncti(parts)
    order = [3, 0, 4, 1, 2]
    assert ncti([parts[i] for i in order]) == pytest.approx([base[i] for i in order], rel=1e-15)
    assert ncti(tuple(parts)) == base


def test_ncti_depends_on_the_pool() -> None:
    # Documented: adding a candidate moves the min/max and so the others' scores, even their
    # order.
    a = NCTIParts(vc=0.0, seli=0.0, ncc=1.0)
    b = NCTIParts(vc=1.0, seli=1.0, ncc=0.0)
    assert ncti([a, b]) == [1.0, 2.0]
    c = NCTIParts(vc=0.0, seli=0.0, ncc=-9.0)
    assert ncti([a, b, c])[:2] == pytest.approx([1.0, 2.0 + 0.9], rel=1e-12)
    d = NCTIParts(vc=9.0, seli=9.0, ncc=0.0)
    assert ncti([a, b, d]) == pytest.approx([1.0, 2.0 / 9.0, 2.0], rel=1e-12)  # a outranks b


def test_ncti_separable_beats_random() -> None:
    separable, random, y = _separable_and_random(15)
    p_sep = ncti_parts(separable, y)
    p_rand = ncti_parts(random, y)
    assert p_sep.ncc > p_rand.ncc + 0.3
    assert p_sep.seli > p_rand.seli
    scores = ncti([p_sep, p_rand])
    assert scores[0] > scores[1]


def test_ncti_parts_invariances_and_torch() -> None:
    for scale in (0.05, 1.0):
        x, y = _blobs(16, n=60, d=7, c=3, sep=0.7, scale=scale)
        base = ncti_parts(x, y)
        _assert_parts_close(ncti_parts(x, np.array([5, -2, 11])[y]), base, 1e-10)
        order = np.random.default_rng(17).permutation(len(y))
        _assert_parts_close(ncti_parts(x[order], y[order]), base, 1e-8)
        _assert_parts_close(ncti_parts(x @ _rotation(7, 18) + 2.0, y), base, 1e-8)
        assert ncti_parts(torch.from_numpy(x), torch.from_numpy(y)) == base


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pca_dim": 0}, "pca_dim"), ({"pca_dim": 3.0}, "pca_dim"), ({"pca_dim": False}, "pca_dim"),
    ({"variance_components": 0}, "variance_components"),
    ({"variance_components": None}, "variance_components"),
    ({"pca_solver": "arpack"}, "pca_solver"), ({"random_state": -3}, "random_state"),
    ({"vc_log": "yes"}, "vc_log"),
])
def test_ncti_parts_rejects_bad_options(kwargs: dict, match: str) -> None:
    x, y = _blobs(0, n=20, d=4)
    with pytest.raises(AdvTransferError, match=match):
        ncti_parts(x, y, **kwargs)


def test_ncti_parts_rejects_bad_data() -> None:
    x, y = _blobs(0, n=20, d=4)
    with pytest.raises(AdvTransferError, match="features"):
        ncti_parts(x[:2], y[:2])
    with pytest.raises(AdvTransferError, match="features"):
        ncti_parts(np.where(x > 0, np.nan, x), y)
    with pytest.raises(AdvTransferError, match="labels"):
        ncti_parts(x, np.full(20, 3))
    with pytest.raises(AdvTransferError, match="features and labels"):
        ncti_parts(x, y[:5])
    with pytest.raises(AdvTransferError, match="features"):
        ncti_parts(50.0 * np.eye(2)[y % 2], y % 2 == 0, pca_dim=None)  # no within-class spread
    with pytest.raises(AdvTransferError, match="features"):
        ncti_parts(0.01 * np.eye(2)[y % 2], y % 2 == 0, pca_dim=None)  # same, shrunk branch


@pytest.mark.parametrize(("parts", "match"), [
    ([], "parts"), (NCTIParts(vc=0.0, seli=1.0, ncc=0.5), "parts"), ([1.0, 2.0], "parts"),
    ([NCTIParts(vc=float("nan"), seli=1.0, ncc=0.5)], "parts"), ("abc", "parts"),
])
def test_ncti_rejects_bad_parts(parts: object, match: str) -> None:
    with pytest.raises(AdvTransferError, match=match):
        ncti(parts)  # type: ignore[arg-type]
