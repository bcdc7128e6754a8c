"""NLEEP, leave-one-out k-NN accuracy and the PED wrapper: reference re-implementations,
hand-computed cases, invariances and input validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from advtransfer.errors import AdvTransferError
from advtransfer.estimators.knn import knn_accuracy
from advtransfer.estimators.leep import leep
from advtransfer.estimators.logme import logme
from advtransfer.estimators.nleep import _expected_empirical_prediction, nleep
from advtransfer.estimators.ped import ped, ped_features

# --------------------------------------------------------------------------------------------
# shared data


def _blobs(seed: int = 0, n_per_class: int = 30, n_classes: int = 3, d: int = 6,
           shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes, labels shuffled (not sorted by class)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    rng.shuffle(y)
    centres = shift * rng.normal(size=(n_classes, d))
    return centres[y] + rng.normal(size=(y.size, d)), y


def _separated(seed: int = 0, n_per_class: int = 30, n_classes: int = 3,
               d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    rng.shuffle(y)
    return 50.0 * np.eye(n_classes, d)[y] + 0.1 * rng.normal(size=(y.size, d)), y


def _rotation(d: int, seed: int = 7) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# --------------------------------------------------------------------------------------------
# NLEEP


def _nleep_reference(x: np.ndarray, y: np.ndarray, component_ratio: int = 5, seed: int = 0,
                     variance: float = 0.8, solver: str = "full") -> tuple[float, float]:
    """The steps of TencentARC/SFDA metrics.py NLEEP literally (per-class loops), seeded.

    Returns (mean probability as the code, mean log-probability as the paper)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    n = len(y)
    num_classes = len(np.unique(y))
    pca = PCA(n_components=variance, svd_solver=solver)
    pca.fit(x)
    x_pca = pca.transform(x)
    n_components = component_ratio * num_classes
    gmm = GaussianMixture(n_components=n_components, random_state=seed).fit(x_pca)
    prob = gmm.predict_proba(x_pca)
    pyz = np.zeros((num_classes, n_components))
    for c in range(num_classes):
        rows = [i for i in range(n) if y[i] == c]
        for v in range(n_components):
            pyz[c, v] = sum(prob[i, v] for i in rows) / n
    pz = [sum(pyz[c, v] for c in range(num_classes)) for v in range(n_components)]
    py_x = [
        sum(prob[i, v] * pyz[y[i], v] / pz[v] for v in range(n_components)) for i in range(n)
    ]
    return sum(py_x) / n, sum(math.log(p) for p in py_x) / n


@pytest.mark.parametrize(("ratio", "seed"), [(5, 0), (2, 3)])
def test_nleep_matches_reference_steps(ratio: int, seed: int) -> None:
    x, y = _blobs(seed=1, n_per_class=40, d=10)
    code, paper = _nleep_reference(x, y, component_ratio=ratio, seed=seed)
    assert nleep(x, y, components_per_class=ratio, seed=seed) == pytest.approx(code, rel=1e-8)
    assert nleep(x, y, components_per_class=ratio, seed=seed, form="paper") == pytest.approx(
        paper, rel=1e-8)
    assert 0.0 < code <= 1.0 and paper <= 0.0


def test_nleep_pca_solver_matches_reference_default_solver() -> None:
    # The reference leaves PCA's svd_solver at "auto"; ours is the exact "full" SVD.
    x, y = _blobs(seed=2, n_per_class=40, d=10)
    code, _ = _nleep_reference(x, y, solver="auto")
    assert nleep(x, y) == pytest.approx(code, rel=1e-6)


def test_nleep_variance_parameter_and_no_pca() -> None:
    x, y = _blobs(seed=4, n_per_class=30, d=8)
    code, _ = _nleep_reference(x, y, variance=0.5, component_ratio=2)
    assert nleep(x, y, variance=0.5, components_per_class=2) == pytest.approx(code, rel=1e-8)
    value = nleep(x, y, variance=None, components_per_class=2)
    assert 0.0 < value <= 1.0


def test_leep_on_posteriors_by_hand() -> None:
    # theta = [[.8,.2],[.6,.4],[.1,.9]], y = [0,0,1]: P(y,v) = [[1.4,.6],[.1,.9]]/3, P(v) = .5,
    # P(y|v) = [[1.4,.6],[.1,.9]]/1.5, so p = [.8*1.4+.2*.6, .6*1.4+.4*.6, .1*.1+.9*.9]/1.5.
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    codes = np.array([0, 0, 1])
    expected = np.array([1.24, 1.08, 0.82]) / 1.5
    np.testing.assert_allclose(_expected_empirical_prediction(theta, codes, 2), expected,
                               rtol=1e-14)
    assert float(np.mean(expected)) == pytest.approx(3.14 / 4.5, rel=1e-14)
    # the paper form is LEEP on the posteriors
    assert leep(theta, codes) == pytest.approx(float(np.mean(np.log(expected))), rel=1e-14)
    # a component with no posterior mass contributes nothing
    padded = np.hstack([theta, np.zeros((3, 1))])
    np.testing.assert_allclose(_expected_empirical_prediction(padded, codes, 2), expected,
                               rtol=1e-14)


def test_nleep_separable_beats_random() -> None:
    sep, y = _separated(seed=0)
    rnd = np.random.default_rng(1).normal(size=sep.shape)
    assert nleep(sep, y) > nleep(rnd, y) + 0.2
    assert nleep(sep, y, form="paper") > nleep(rnd, y, form="paper") + 0.5
    assert nleep(sep, y) == pytest.approx(1.0, abs=1e-6)


def test_nleep_invariant_to_label_values() -> None:
    x, y = _blobs(seed=5)
    base = nleep(x, y)
    assert nleep(x, np.array([7, -3, 100])[y]) == pytest.approx(base, rel=1e-12)
    assert nleep(x, np.array(["cat", "dog", "emu"])[y]) == pytest.approx(base, rel=1e-12)
    assert nleep(x, np.array([2, 0, 1])[y], form="paper") == pytest.approx(
        nleep(x, y, form="paper"), rel=1e-12)


def test_nleep_sample_order_and_rotation_for_well_separated_data() -> None:
    # Invariant up to the mixture's k-means initialisation: exact when EM reaches the same
    # optimum, as it does for well-separated clusters (2 per class here, 2 components a class).
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 40)
    sub = np.tile([0, 1], 60)
    centres = 20.0 * rng.normal(size=(6, 5))
    x = centres[2 * y + sub] + rng.normal(size=(120, 5))
    base = nleep(x, y, components_per_class=2)
    perm = rng.permutation(120)
    assert nleep(x[perm], y[perm], components_per_class=2) == pytest.approx(base, rel=1e-6)
    rotated = x @ _rotation(5) + 3.0
    assert nleep(rotated, y, components_per_class=2) == pytest.approx(base, rel=1e-6)


def test_nleep_torch_equals_numpy() -> None:
    x, y = _blobs(seed=6)
    assert nleep(torch.from_numpy(x), torch.from_numpy(y)) == nleep(x, y)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"variance": 0.0}, "variance"),
        ({"variance": 1.0}, "variance"),
        ({"variance": -0.5}, "variance"),
        ({"variance": True}, "variance"),
        ({"variance": "0.8"}, "variance"),
        ({"components_per_class": 0}, "components_per_class"),
        ({"components_per_class": 2.5}, "components_per_class"),
        ({"components_per_class": True}, "components_per_class"),
        ({"components_per_class": 40}, "components_per_class"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"form": "log"}, "form"),
    ],
)
def test_nleep_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    x, y = _blobs(seed=0)
    with pytest.raises(AdvTransferError, match=name):
        nleep(x, y, **kwargs)


def test_nleep_bad_inputs() -> None:
    x, y = _blobs(seed=0)
    with pytest.raises(AdvTransferError, match="features"):
        nleep(np.ones((90, 4)), y)  # constant
    with pytest.raises(AdvTransferError, match="features"):
        nleep(x[:, 0], y)
    with pytest.raises(AdvTransferError, match="features"):
        nleep(np.where(np.arange(6) == 2, np.nan, x), y)
    with pytest.raises(AdvTransferError, match="labels"):
        nleep(x, y[:-1])
    with pytest.raises(AdvTransferError, match="labels"):
        nleep(x, np.zeros(90, dtype=int))


# --------------------------------------------------------------------------------------------
# k-NN accuracy


def _knn_brute_force(f: np.ndarray, y: np.ndarray, k: int, metric: str) -> float:
    """Loop over samples and pairs; distances from their definition; tie-inclusive k-th
    neighbour; vote ties credited 1/|winners|."""
    n = len(y)
    total = 0.0
    for i in range(n):
        dists = []
        for j in range(n):
            if j == i:
                continue
            if metric == "euclidean":
                d = float(np.sqrt(np.sum((f[i] - f[j]) ** 2)))
            else:
                ni, nj = np.linalg.norm(f[i]), np.linalg.norm(f[j])
                sim = 0.0 if ni == 0 or nj == 0 else float(f[i] @ f[j]) / (ni * nj)
                d = 1.0 - sim
            dists.append((d, j))
        kth = sorted(d for d, _ in dists)[k - 1]
        votes: dict[int, int] = {}
        for d, j in dists:
            if d <= kth + 1e-12:
                votes[int(y[j])] = votes.get(int(y[j]), 0) + 1
        best = max(votes.values())
        winners = [c for c, v in votes.items() if v == best]
        if int(y[i]) in winners:
            total += 1.0 / len(winners)
    return total / n


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_knn_matches_brute_force(metric: str, k: int) -> None:
    x, y = _blobs(seed=11, n_per_class=25, n_classes=4, d=5, shift=1.0)
    x = x + 0.5  # cosine is not translation invariant: keep it off-centre
    expected = _knn_brute_force(x, y, k, metric)
    assert knn_accuracy(x, y, k=k, metric=metric) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < expected < 1.0


def test_knn_one_dimensional_ties_by_hand() -> None:
    # points 0..4 with labels 0,0,1,0,1 (Euclidean); the worked cases are in the comments
    f = np.arange(5.0)[:, None]
    y = np.array([0, 0, 1, 0, 1])
    # k=1: 0 -> {1}: right; 1 -> {0,2} tie 1:1 -> 1/2; 2 -> {1,3} -> 0, wrong; 3 -> {2,4} -> 1,
    # wrong; 4 -> {3} wrong.  (1 + 1/2) / 5
    assert knn_accuracy(f, y, k=1, metric="euclidean") == pytest.approx(0.3, abs=1e-15)
    # k=2: 0 -> {1,2} tie -> 1/2; 1 -> {0,2} -> 1/2; 2 -> {1,3} wrong; 3 -> {2,4} wrong;
    # 4 -> {3,2} tie -> 1/2.
    assert knn_accuracy(f, y, k=2, metric="euclidean") == pytest.approx(0.3, abs=1e-15)
    # k=3: 0 -> {1,2,3}: 0 wins, right; 1 -> {0,2,3}: right; 2 -> {1,3,0,4} (tie-inclusive):
    # 0 wins, wrong; 3 -> {2,4,1}: 1 wins, wrong; 4 -> {3,2,1}: 0 wins, wrong.
    assert knn_accuracy(f, y, k=3, metric="euclidean") == pytest.approx(0.4, abs=1e-15)
    for k in (1, 2, 3, 4):
        assert knn_accuracy(f, y, k=k, metric="euclidean") == pytest.approx(
            _knn_brute_force(f, y, k, "euclidean"), abs=1e-15)


def test_knn_cosine_by_hand() -> None:
    # [1,0] and [2,0] share a direction (distance 0), so do [0,1] and [0,3]; [1,1] is at the
    # same angle from all four: a 2:2 vote, credited 1/2.  (4 + 1/2) / 5
    f = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    y = np.array([0, 0, 1, 1, 0])
    assert knn_accuracy(f, y, k=1) == pytest.approx(0.9, abs=1e-15)
    # a zero vector has similarity 0 (distance 1) to everything: it ties with all the others
    z = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert knn_accuracy(z, np.array([1, 0, 0, 1]), k=1) == pytest.approx(0.5, abs=1e-15)


def test_knn_separable_beats_random() -> None:
    sep, y = _separated(seed=2)
    rnd = np.random.default_rng(3).normal(size=sep.shape)
    for metric in ("cosine", "euclidean"):
        assert knn_accuracy(sep, y, metric=metric) == 1.0
        assert knn_accuracy(rnd, y, metric=metric) < 0.6


def test_knn_invariances() -> None:
    x, y = _blobs(seed=12, n_per_class=30, n_classes=3, d=6, shift=1.0)
    x = x + 0.3
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    q = _rotation(6)
    for metric in ("cosine", "euclidean"):
        base = knn_accuracy(x, y, metric=metric)
        assert knn_accuracy(x, np.array([9, -1, 4])[y], metric=metric) == base
        assert knn_accuracy(x, np.array(["a", "b", "c"])[y], metric=metric) == base
        assert knn_accuracy(x[perm], y[perm], metric=metric) == base
        assert knn_accuracy(x @ q, y, metric=metric) == base
        assert knn_accuracy(1e3 * x, y, metric=metric) == base
    assert knn_accuracy(x + 5.0, y, metric="euclidean") == knn_accuracy(x, y, metric="euclidean")
    scales = rng.uniform(0.1, 10.0, size=(len(y), 1))
    assert knn_accuracy(x * scales, y) == knn_accuracy(x, y)


def test_knn_ties_do_not_depend_on_sample_order() -> None:
    # integer grid points with many duplicates and equal distances
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(60, 2)).astype(np.float64)
    y = rng.integers(0, 3, size=60)
    for metric in ("cosine", "euclidean"):
        for k in (1, 3, 6):
            base = knn_accuracy(x, y, k=k, metric=metric)
            assert base == pytest.approx(_knn_brute_force(x, y, k, metric), abs=1e-12)
            for seed in range(3):
                perm = np.random.default_rng(seed).permutation(60)
                assert knn_accuracy(x[perm], y[perm], k=k, metric=metric) == pytest.approx(
                    base, abs=1e-12)


def test_knn_torch_equals_numpy() -> None:
    x, y = _blobs(seed=13)
    assert knn_accuracy(torch.from_numpy(x), torch.from_numpy(y)) == knn_accuracy(x, y)
    assert knn_accuracy(torch.from_numpy(x).float(), y) == knn_accuracy(
        x.astype(np.float32).astype(np.float64), y)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": -1}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"k": 90}, "k"),
        ({"metric": "manhattan"}, "metric"),
    ],
)
def test_knn_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    x, y = _blobs(seed=0)
    with pytest.raises(AdvTransferError, match=name):
        knn_accuracy(x, y, **kwargs)


def test_knn_bad_inputs() -> None:
    x, y = _blobs(seed=0)
    with pytest.raises(AdvTransferError, match="features"):
        knn_accuracy(x[:, 0], y)
    with pytest.raises(AdvTransferError, match="features"):
        knn_accuracy(np.full_like(x, np.inf), y)
    with pytest.raises(AdvTransferError, match="labels"):
        knn_accuracy(x, y[:10])
    with pytest.raises(AdvTransferError, match="labels"):
        knn_accuracy(x, np.ones(90))


# --------------------------------------------------------------------------------------------
# PED


def _ped_reference(x: np.ndarray, y: np.ndarray, general_x: np.ndarray, time_step: float = 0.1,
                   nsigma: float = 0.6, constant: float = 1.0, exit_ratio: float = 0.5,
                   eps: float = 1e-3, max_steps: int = 6) -> np.ndarray:
    """lixiaotong97/PED metrics.py (One_Step_PED inside PED_Score's loop), step by step:
    standardise by the reference statistics, per-class loops for means and variances, a loop
    over class pairs, undo the standardisation, keep the step while the change ratio is above
    exit_ratio."""
    classes = sorted(set(y.tolist()))
    index = {c: a for a, c in enumerate(classes)}
    codes = np.array([index[c] for c in y.tolist()])
    n_classes = len(classes)

    def one_step(x: np.ndarray) -> tuple[np.ndarray, float]:
        smean = np.mean(general_x, axis=0)
        sstd = np.maximum(np.std(general_x, axis=0), eps)
        x = (x - smean) / sstd
        means = np.zeros((n_classes, x.shape[1]))
        variances = np.zeros((n_classes, x.shape[1]))
        for a in range(n_classes):
            rows = x[codes == a]
            means[a] = rows.sum(axis=0) / len(rows)
            variances[a] = np.var(rows, axis=0)
        radius = np.sqrt(np.sum(variances, axis=1))
        coulomb = np.zeros((n_classes, n_classes, x.shape[1]))
        for a in range(n_classes):
            for b in range(a + 1, n_classes):
                dist = means[b] - means[a]
                d = math.sqrt(float(np.sum(dist**2)))
                force = max(nsigma * radius[b] + nsigma * radius[a] - d, 0.0)
                accelerate = constant * force
                coulomb[a, b] = -dist / d * min(0.5 * time_step**2 * accelerate, force)
        coulomb = coulomb - np.transpose(coulomb, (1, 0, 2))
        overall = np.sum(coulomb, axis=1)
        x = x + overall[codes]
        return x * sstd + smean, float(np.sum(np.abs(overall)))

    step = 0
    first = 0.0
    while step < max_steps:
        x_new, change = one_step(x)
        if step == 0:
            first = change
        ratio = change / first if first > 0 else float("nan")
        if ratio > exit_ratio:
            x = x_new
        else:
            break
        step += 1
    return x


def _ped_data(seed: int = 21) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 25)
    rng.shuffle(y)
    scales = np.array([1.0, 3.0, 0.5, 2.0, 1.0])
    x = (rng.normal(size=(4, 5))[y] + rng.normal(size=(100, 5))) * scales + 2.0
    general = rng.normal(size=(300, 5)) * scales * 1.3 + 1.0
    return x, y, general


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"nsigma": 2.0},
        {"nsigma": 0.45, "time_step": 0.5},  # stops after 3 steps (exit ratio)
        {"exit_ratio": 0.9, "constant": 3.0},  # stops after 5 steps
        {"max_steps": 2},
        {"time_step": 2.0, "nsigma": 1.0},  # large steps: the clamp at the overlap is active
    ],
)
def test_ped_features_match_reference_loop(params: dict[str, Any]) -> None:
    x, y, general = _ped_data()
    expected = _ped_reference(x, y, general, **params)
    got = ped_features(x, y, reference=general, **params)
    assert not np.allclose(expected, x)  # the dynamics did move the features
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # reference=None standardises by the target features themselves
    np.testing.assert_allclose(ped_features(x, y, **params), _ped_reference(x, y, x, **params),
                               rtol=1e-10, atol=1e-12)


def test_ped_two_classes_by_hand() -> None:
    # 1-D, reference with mean 0 and std 1: class 0 = {-1, 1} (mean 0), class 1 = {1, 3}
    # (mean 2), both with variance 1. nsigma=2: overlap 2 + 2 - 2 = 2; a step moves each class by
    # 0.5 * t^2 * k * overlap = 0.01 (t=0.1, k=1) away from the other, so the overlap shrinks by
    # the factor 0.99 per step, and the ratio to the first step is 0.99^s > 0.5 for all 6 steps:
    # each class moves by 0.01 * (1 + 0.99 + ... + 0.99^5) = 1 - 0.99^6 in total.
    f = np.array([[-1.0], [1.0], [1.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    reference = np.array([[-1.0], [1.0]])
    shift = np.array([[-1.0], [-1.0], [1.0], [1.0]])
    moved = ped_features(f, y, nsigma=2.0, reference=reference)
    np.testing.assert_allclose(moved, f + (1 - 0.99**6) * shift, rtol=1e-13, atol=1e-15)
    # exit_ratio 0.995: the second step (ratio 0.99) is discarded
    once = ped_features(f, y, nsigma=2.0, reference=reference, exit_ratio=0.995)
    np.testing.assert_allclose(once, f + 0.01 * shift, rtol=1e-13, atol=1e-15)
    # t=10: 0.5 * 100 * 2 = 100 is clamped at the overlap 2: the classes end up just touching,
    # the next step proposes no motion (ratio 0) and the simulation stops
    clamped = ped_features(f, y, nsigma=2.0, reference=reference, time_step=10.0)
    np.testing.assert_allclose(clamped, f + 2.0 * shift, rtol=1e-13, atol=1e-15)


def test_ped_without_dynamics_is_the_estimator() -> None:
    x, y, _ = _ped_data()
    assert ped(logme, x, y, max_steps=0) == logme(x, y)
    assert np.array_equal(ped_features(x, y, max_steps=0), x)
    # classes that do not overlap do not move: the first step proposes no motion
    sep, ys = _separated(seed=5)
    assert np.array_equal(ped_features(sep, ys), sep)
    assert ped(logme, sep, ys) == logme(sep, ys)


def test_ped_moves_classes_rigidly_apart() -> None:
    x, y, _ = _ped_data()
    moved = ped_features(x, y)

    def min_gap(f: np.ndarray) -> float:
        means = [f[y == c].mean(axis=0) / x.std(axis=0) for c in range(4)]
        return min(float(np.linalg.norm(means[a] - means[b]))
                   for a in range(4) for b in range(a + 1, 4))

    for c in range(4):  # every sample of a class moves by the same vector
        shift = moved[y == c] - x[y == c]
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-12)
        assert np.linalg.norm(shift[0]) > 1e-3
    assert min_gap(moved) > min_gap(x)
    assert ped(logme, x, y) > logme(x, y)


def test_ped_separable_beats_random() -> None:
    sep, y = _blobs(seed=8, shift=4.0)
    rnd = np.random.default_rng(9).normal(size=sep.shape)
    assert ped(logme, sep, y) > ped(logme, rnd, y)
    assert ped(knn_accuracy, sep, y) > ped(knn_accuracy, rnd, y)


def test_ped_invariant_to_sample_order_and_label_values() -> None:
    x, y, general = _ped_data()
    base = ped_features(x, y, reference=general)
    perm = np.random.default_rng(1).permutation(len(y))
    np.testing.assert_allclose(ped_features(x[perm], y[perm], reference=general), base[perm],
                               rtol=1e-12, atol=1e-12)
    renamed = np.array([40, -2, 7, 3])[y]
    np.testing.assert_allclose(ped_features(x, renamed, reference=general), base, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(ped_features(x, np.array(list("wxyz"))[y], reference=general),
                               base, rtol=1e-12, atol=1e-12)
    assert ped(logme, x[perm], y[perm]) == pytest.approx(ped(logme, x, y), rel=1e-9)
    assert ped(logme, x, renamed) == pytest.approx(ped(logme, x, y), rel=1e-9)


def test_ped_torch_equals_numpy() -> None:
    x, y, general = _ped_data()
    np.testing.assert_array_equal(
        ped_features(torch.from_numpy(x), torch.from_numpy(y), reference=torch.from_numpy(general)),
        ped_features(x, y, reference=general))
    assert ped(logme, torch.from_numpy(x), torch.from_numpy(y)) == ped(logme, x, y)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"time_step": 0.0}, "time_step"),
        ({"time_step": -0.1}, "time_step"),
        ({"time_step": float("nan")}, "time_step"),
        ({"time_step": True}, "time_step"),
        ({"nsigma": 0}, "nsigma"),
        ({"nsigma": "0.6"}, "nsigma"),
        ({"constant": -1.0}, "constant"),
        ({"constant": float("inf")}, "constant"),
        ({"exit_ratio": 1.0}, "exit_ratio"),
        ({"exit_ratio": -0.1}, "exit_ratio"),
        ({"max_steps": -1}, "max_steps"),
        ({"max_steps": 2.0}, "max_steps"),
        ({"max_steps": True}, "max_steps"),
        ({"eps": 0.0}, "eps"),
        ({"reference": np.ones((10, 3))}, "reference"),
        ({"reference": np.ones(5)}, "reference"),
        ({"reference": np.full((10, 5), np.nan)}, "reference"),
    ],
)
def test_ped_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    x, y, _ = _ped_data()
    with pytest.raises(AdvTransferError, match=name):
        ped_features(x, y, **kwargs)
    with pytest.raises(AdvTransferError, match=name):
        ped(logme, x, y, **kwargs)


def test_ped_bad_inputs() -> None:
    x, y, _ = _ped_data()
    with pytest.raises(AdvTransferError, match="estimator"):
        ped("logme", x, y)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="params"):
        ped(logme, x, y, steps=3)
    with pytest.raises(AdvTransferError, match="features"):
        ped_features(x[:, 0], y)
    with pytest.raises(AdvTransferError, match="labels"):
        ped_features(x, y[:-1])
    with pytest.raises(AdvTransferError, match="labels"):
        ped(logme, x, np.zeros(100, dtype=int))
