"""ETran, LFC/LGC (with per-sample gradients) and TMI: naive re-implementations, properties,
input validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import digamma

from advtransfer.errors import AdvTransferError, AdvTransferWarning
from advtransfer.estimators.etran import ETranParts, etran, etran_parts
from advtransfer.estimators.lfc import lfc, lgc, per_sample_gradients
from advtransfer.estimators.tmi import tmi

# --------------------------------------------------------------------------------------------
# shared data


def _data(seed: int = 0, n: int = 240, d: int = 5, c: int = 3,
          shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    rng.shuffle(labels)
    features = rng.normal(size=(n, d)) + shift * np.eye(c, d)[labels]
    return features, labels


def _separable(seed: int = 1, n: int = 240, d: int = 5,
               c: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    rng.shuffle(labels)
    centres = 10.0 * np.eye(c, d)
    separable = centres[labels] + 0.3 * rng.normal(size=(n, d))
    random = rng.normal(size=(n, d)) * separable.std(axis=0)
    return separable, random, labels


def _rotation(d: int, seed: int = 7) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


RENAMED = np.array([7, -3, 100])


# --------------------------------------------------------------------------------------------
# ETran: naive re-implementation following the published code step by step


def _energy_by_hand(f: np.ndarray) -> float:
    """``Energy_Score(f, 0.5, 'bot')``: lowest ``int(0.5*10) * N // 1000`` log-sum-exps."""
    scores = []
    for row in f:
        top = max(row)
        scores.append(top + math.log(sum(math.exp(v - top) for v in row)))
    count = int(0.5 * 10) * len(scores) // 1000
    chosen = sorted(scores)[:count]
    return sum(chosen) / len(chosen)


def _lda_by_hand_as_published(f: np.ndarray, y: np.ndarray) -> float:
    """The published ``LDA().fit(X, y).predict_proba(X)`` path, literally (shrinkage by three
    power iterations, eigh of inv(Sw) @ Sb, coef = means @ V @ V.T), then the mean true-class
    probability."""
    n, d = f.shape
    classes = sorted(set(y.tolist()))
    priors = np.array([np.sum(y == c) / n for c in classes])
    means = np.array([f[y == c].mean(axis=0) for c in classes])
    sw = np.zeros((d, d))
    for i, c in enumerate(classes):
        sw += priors[i] * np.cov(f[y == c].T, bias=True)
    x = sw.sum(axis=1)
    for _ in range(3):
        t = sw @ x
        yv = t / np.linalg.norm(t)
        t = sw @ yv
        x = t / np.linalg.norm(t)
    largest = x @ sw @ yv
    shrink = max(np.exp(-5 * largest), 1e-10)
    st = (1 - shrink) * np.cov(f.T, bias=True)
    st[np.diag_indices(d)] += shrink * np.trace(np.cov(f.T, bias=True)) / d
    ssw = (1 - shrink) * sw
    ssw[np.diag_indices(d)] += shrink * np.trace(sw) / d
    evals, evecs = np.linalg.eigh(np.linalg.inv(ssw) @ (st - ssw))
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    total = 0.0
    for i in range(n):
        logits = f[i] @ coef.T + intercept
        p = np.exp(logits - logits.max())
        p /= p.sum()
        total += p[classes.index(y[i])]
    return total / n


def _lda_shrunk_by_hand(f: np.ndarray, y: np.ndarray) -> float:
    n, d = f.shape
    classes = sorted(set(y.tolist()))
    priors = [np.sum(y == c) / n for c in classes]
    means = [f[y == c].mean(axis=0) for c in classes]
    sw = sum(p * np.cov(f[y == c].T, bias=True) for p, c in zip(priors, classes, strict=True))
    s = max(math.exp(-5 * max(np.linalg.eigvalsh(sw))), 1e-10)
    sigma = (1 - s) * sw + s * np.trace(sw) / d * np.eye(d)
    inv = np.linalg.inv(sigma)
    total = 0.0
    for i in range(n):
        deltas = [f[i] @ inv @ mu - 0.5 * mu @ inv @ mu + math.log(p)
                  for mu, p in zip(means, priors, strict=True)]
        top = max(deltas)
        weights = [math.exp(v - top) for v in deltas]
        total += weights[classes.index(y[i])] / sum(weights)
    return total / n


def _svd_by_hand(f: np.ndarray, y: np.ndarray, energy: float = 1.0) -> float:
    """-mean((F x_hat - Y)^2) with x_hat = V S^-1 U^T Y on the kept singular triplets."""
    n = f.shape[0]
    classes = sorted(set(y.tolist()))
    onehot = np.array([[1.0 if y[i] == c else 0.0 for c in classes] for i in range(n)])
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    rank = len(s)
    if energy < 1:
        total = sum(v**2 for v in s)
        acc, rank = 0.0, 0
        while acc < energy * total:
            acc += s[rank] ** 2
            rank += 1
    x_hat = vt[:rank].T @ np.diag(1 / s[:rank]) @ u[:, :rank].T @ onehot
    return -float(np.mean((f @ x_hat - onehot) ** 2))


def test_etran_parts_match_published_steps() -> None:
    f, y = _data(seed=3, n=400)
    parts = etran_parts(f, y)
    assert parts.energy == pytest.approx(_energy_by_hand(f), rel=1e-10)
    assert parts.lda == pytest.approx(_lda_by_hand_as_published(f, y), rel=1e-8)
    assert parts.svd == pytest.approx(_svd_by_hand(f, y), rel=1e-8)
    shrunk = etran_parts(f, y, lda="shrunk", svd_energy=0.8)
    assert shrunk.lda == pytest.approx(_lda_shrunk_by_hand(f, y), rel=1e-8)
    assert shrunk.svd == pytest.approx(_svd_by_hand(f, y, 0.8), rel=1e-8)
    assert shrunk.energy == parts.energy


def test_etran_energy_hand_worked() -> None:
    # log-sum-exp of rows [0, 0] = log 2, [log 3, 0] = log 4, [1, 1] = 1 + log 2.
    f = np.array([[0.0, 0.0], [math.log(3.0), 0.0], [1.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 1, 0, 1])
    assert etran_parts(f, y, energy_fraction=1.0).energy == pytest.approx(
        (math.log(2) + math.log(4) + 2 * (1 + math.log(2))) / 4, rel=1e-12)
    # 0.5 % of 4 samples rounds to none: at least one (the lowest, log 2) is kept.
    assert etran_parts(f, y).energy == pytest.approx(math.log(2), rel=1e-12)
    assert etran_parts(f, y, energy_fraction=0.5).energy == pytest.approx(
        (math.log(2) + math.log(4)) / 2, rel=1e-12)


def test_etran_pool_combination_hand_worked() -> None:
    pool = [ETranParts(1.0, 0.5, -0.3), ETranParts(2.0, 0.7, -0.1), ETranParts(3.0, 0.6, -0.2)]
    # energy scaled [0, .5, 1], lda [0, 1, .5]; 0.15 * e + 0.85 * l.
    assert etran(pool) == pytest.approx([0.0, 0.925, 0.575], rel=1e-12, abs=1e-15)
    assert etran(pool, weights=(1, 1, 1)) == pytest.approx([0.0, 2.5, 2.0], rel=1e-12)
    # order as given
    assert etran(pool[::-1]) == pytest.approx([0.575, 0.925, 0.0], rel=1e-12, abs=1e-15)


def test_etran_pool_of_one_and_constant_terms_are_defined() -> None:
    assert etran([ETranParts(4.0, 0.9, -0.1)]) == [0.0]
    pool = [ETranParts(5.0, 0.2, 0.0), ETranParts(5.0, 0.4, 0.0)]
    assert etran(pool) == pytest.approx([0.0, 0.85])


def test_etran_lda_part_ranks_separable_above_random() -> None:
    separable, random, y = _separable()
    good, bad = etran_parts(separable, y), etran_parts(random, y)
    assert good.lda > 0.99 > 0.6 > bad.lda
    assert good.svd > bad.svd
    scores = etran([bad, good], weights=(0.0, 1.0, 0.0))
    assert scores == [0.0, 1.0]


def test_etran_parts_invariances() -> None:
    f, y = _data(seed=4)
    base = etran_parts(f, y)
    perm = np.random.default_rng(0).permutation(len(y))
    for other in (etran_parts(f, RENAMED[y]), etran_parts(f[perm], y[perm])):
        for name in ("energy", "lda", "svd"):
            assert getattr(other, name) == pytest.approx(getattr(base, name), rel=1e-10)
    rotated = etran_parts(f @ _rotation(f.shape[1]), y)
    assert rotated.lda == pytest.approx(base.lda, rel=1e-10)
    assert rotated.svd == pytest.approx(base.svd, rel=1e-10)
    shifted = etran_parts(f + 3.0, y)
    assert shifted.lda == pytest.approx(base.lda, rel=1e-10)
    f32 = f.astype(np.float32)
    assert etran_parts(torch.from_numpy(f32), torch.from_numpy(y)) == etran_parts(f32, y)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"energy_fraction": 0}, "energy_fraction"), ({"energy_fraction": 1.5}, "energy_fraction"),
     ({"energy_fraction": float("nan")}, "energy_fraction"), ({"svd_energy": 0.0}, "svd_energy"),
     ({"svd_energy": True}, "svd_energy"), ({"lda": "qda"}, "lda")],
)
def test_etran_parts_rejects_bad_parameters(kwargs: dict, name: str) -> None:
    f, y = _data()
    with pytest.raises(AdvTransferError, match=name):
        etran_parts(f, y, **kwargs)


def test_etran_rejects_bad_inputs() -> None:
    f, y = _data()
    with pytest.raises(AdvTransferError, match="features"):
        etran_parts(f[:, 0], y)
    with pytest.raises(AdvTransferError, match="labels"):
        etran_parts(f, np.zeros(len(y)))
    with pytest.raises(AdvTransferError, match="same number of samples"):
        etran_parts(f, y[:-1])
    with pytest.raises(AdvTransferError, match="features"):
        etran_parts(np.where(np.eye(*f.shape) > 0, np.nan, f), y)
    part = etran_parts(f, y)
    with pytest.raises(AdvTransferError, match="parts"):
        etran([])
    with pytest.raises(AdvTransferError, match="parts"):
        etran(part)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="parts"):
        etran([part, (1.0, 2.0, 3.0)])  # type: ignore[list-item]
    with pytest.raises(AdvTransferError, match="parts"):
        etran([ETranParts(float("nan"), 0.5, 0.0)])
    for bad in [(0, 0, 0), (1, -1, 0), (1, 1), (1, float("inf"), 0), "abc", None]:
        with pytest.raises(AdvTransferError, match="weights"):
            etran([part], weights=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# LFC / LGC


def _lfc_by_hand(f: np.ndarray, y: np.ndarray, centering: str = "mean") -> float:
    """Explicit N x N matrices and loops."""
    n = f.shape[0]
    theta = np.array([[float(np.dot(f[i], f[j])) for j in range(n)] for i in range(n)])
    agree = np.array([[1.0 if y[i] == y[j] else -1.0 for j in range(n)] for i in range(n)])
    if centering == "mean":
        theta = theta - theta.mean()
        agree = agree - agree.mean()
    else:
        h = np.eye(n) - np.ones((n, n)) / n
        theta, agree = h @ theta @ h, h @ agree @ h
    num = sum(theta[i, j] * agree[i, j] for i in range(n) for j in range(n))
    return num / math.sqrt(np.sum(theta**2) * np.sum(agree**2))


@pytest.mark.parametrize("centering", ["mean", "double"])
@pytest.mark.parametrize(("n", "d"), [(30, 4), (12, 40)])
def test_lfc_matches_explicit_matrices(centering: str, n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    y = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + 2.0 + np.eye(3, d)[y]  # offset: the mean dominates the Gram
    assert lfc(f, y, centering=centering) == pytest.approx(
        _lfc_by_hand(f, y, centering), rel=1e-9)


def test_lfc_hand_worked() -> None:
    # 1-D features [1, 1, -1, -1] with labels [0, 0, 1, 1]: Theta_ij = x_i x_j equals Y exactly.
    f = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    y = np.array([0, 0, 1, 1])
    assert lfc(f, y) == pytest.approx(1.0, rel=1e-12)
    assert lfc(f, 1 - y) == pytest.approx(1.0, rel=1e-12)
    # Features [1, 0, 0, 0]: Theta has one entry 1 (mean 1/16); Y has mean 0.
    # sum (Theta - 1/16) Y = Y_11 = 1; ||Theta - 1/16||^2 = 1 - 1/16; ||Y||^2 = 16.
    g = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert lfc(g, y) == pytest.approx(1.0 / math.sqrt(15.0 / 16.0 * 16.0), rel=1e-12)


def test_lfc_separable_beats_random_and_is_bounded() -> None:
    separable, random, y = _separable()
    good, bad = lfc(separable, y), lfc(random, y)
    assert -1.0 <= bad < 0.2 < 0.8 < good <= 1.0


def test_lfc_invariances() -> None:
    f, y = _data(seed=5)
    base = lfc(f, y)
    assert lfc(f, RENAMED[y]) == pytest.approx(base, rel=1e-12)
    assert lfc(f, np.array(["cat", "dog", "emu"])[y]) == pytest.approx(base, rel=1e-12)
    perm = np.random.default_rng(1).permutation(len(y))
    assert lfc(f[perm], y[perm]) == pytest.approx(base, rel=1e-10)
    assert lfc(f @ _rotation(f.shape[1]), y) == pytest.approx(base, rel=1e-10)
    assert lfc(3.5 * f, y) == pytest.approx(base, rel=1e-12)
    double = lfc(f, y, centering="double")
    assert lfc(f + 4.0, y, centering="double") == pytest.approx(double, rel=1e-9)
    f32 = f.astype(np.float32)
    assert lfc(torch.from_numpy(f32), torch.from_numpy(y)) == lfc(f32, y)
    assert lgc(f, y) == base


def test_lfc_constant_features_give_zero() -> None:
    y = np.array([0, 1, 0, 1, 2])
    assert lfc(np.full((5, 3), 0.1), y) == 0.0
    assert lfc(np.full((5, 3), 0.1), y, centering="double") == 0.0


def test_lfc_lgc_reject_bad_inputs() -> None:
    f, y = _data()
    with pytest.raises(AdvTransferError, match="centering"):
        lfc(f, y, centering="none")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="centering"):
        lgc(f, y, centering=None)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="gradients"):
        lgc(f[:, 0], y)
    with pytest.raises(AdvTransferError, match="features"):
        lfc(f[:1], y[:1])
    with pytest.raises(AdvTransferError, match="labels"):
        lfc(f, np.zeros(len(y)))
    with pytest.raises(AdvTransferError, match="same number of samples"):
        lgc(f, y[:-2])


# --------------------------------------------------------------------------------------------
# per-sample gradients


def _linear(d: int = 4, c: int = 3, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, c).double()


def test_per_sample_gradients_linear_closed_form() -> None:
    model = _linear()
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 4)))
    g = per_sample_gradients(model, x)
    assert g.shape == (6, 3 * 4 + 3)
    # d/dW_{kd} sum_k (W x + b)_k = x_d for every row k; d/db_k = 1.
    expected = torch.cat([x.repeat(1, 3), torch.ones(6, 3, dtype=x.dtype)], dim=1)
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)
    mean = per_sample_gradients(model, x, output="mean")
    torch.testing.assert_close(mean, expected / 3, rtol=1e-12, atol=1e-12)
    # output k: gradient wrt W is x in row k only, wrt b the k-th unit vector.
    one = per_sample_gradients(model, x, output=1, params=["bias", "weight"])
    assert torch.equal(one[:, :3], torch.tensor([0.0, 1.0, 0.0], dtype=x.dtype).expand(6, 3))
    torch.testing.assert_close(one[:, 3 + 4:3 + 8], x, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(one[:, 3:3 + 4]) == 0
    assert torch.count_nonzero(one[:, 3 + 8:]) == 0


def test_per_sample_gradients_frozen_parameters_eval_mode_and_chunks() -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).double()
    model.train()
    x = torch.randn(10, 4, dtype=torch.float64)
    g = per_sample_gradients(model, x)
    assert model.training  # mode restored
    assert g.shape == (10, sum(p.numel() for p in model.parameters()))
    for p in model.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(per_sample_gradients(model, x, chunk_size=3), g)
    # Each row is the gradient of that sample alone (eval mode: no batch statistics, no dropout).
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad()
    model(x[4:5]).sum().backward()
    manual = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(g[4], manual)
    np.testing.assert_array_equal(per_sample_gradients(model, x.numpy()).numpy(), g.numpy())


def test_lgc_of_linear_model_equals_lfc_of_augmented_inputs() -> None:
    x, y = _data(seed=6, n=40, d=4)
    g = per_sample_gradients(_linear(), torch.from_numpy(x))
    augmented = np.hstack([x, np.ones((len(x), 1))])
    for centering in ("mean", "double"):
        assert lgc(g, y, centering=centering) == pytest.approx(
            lfc(augmented, y, centering=centering), rel=1e-9)


def test_per_sample_gradients_rejects_bad_inputs() -> None:
    model = _linear()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(AdvTransferError, match="model"):
        per_sample_gradients(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="output"):
        per_sample_gradients(model, x, output="max")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="output"):
        per_sample_gradients(model, x, output=-1)
    with pytest.raises(AdvTransferError, match="output"):
        per_sample_gradients(model, x, output=3)
    with pytest.raises(AdvTransferError, match="params"):
        per_sample_gradients(model, x, params=["weights"])
    with pytest.raises(AdvTransferError, match="params"):
        per_sample_gradients(model, x, params="weight")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="params"):
        per_sample_gradients(model, x, params=[])
    with pytest.raises(AdvTransferError, match="params"):
        per_sample_gradients(model, x, params=["weight", "weight"])
    with pytest.raises(AdvTransferError, match="chunk_size"):
        per_sample_gradients(model, x, chunk_size=0)
    with pytest.raises(AdvTransferError, match="inputs"):
        per_sample_gradients(model, x[:0])
    with pytest.raises(AdvTransferError, match="inputs"):
        per_sample_gradients(model, object())


# --------------------------------------------------------------------------------------------
# TMI


def _knn_entropy_by_hand(x: np.ndarray, k: int, min_dist: float, norm: str = "max") -> float:
    n, d = x.shape
    total = 0.0
    for i in range(n):
        dists = []
        for j in range(n):
            if j != i:
                diff = np.abs(x[i] - x[j])
                dists.append(max(diff) if norm == "max" else math.sqrt(sum(diff**2)))
        eps = max(sorted(dists)[k - 1], min_dist)
        total += math.log(2 * eps)
    log_c = 0.0 if norm == "max" else d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)
    return -digamma(k) + digamma(n) + log_c + d / n * total


def _tmi_by_hand(f: np.ndarray, y: np.ndarray, k: int = 3, min_dist: float = 1.0,
                 norm: str = "max") -> float:
    """The published ``TMI``: centre, per-class entropy (0 for singletons, inf dropped for
    classes of 2..k samples), mean over classes of prior * entropy."""
    f = f - f.mean(axis=0)
    terms = []
    for c in sorted(set(y.tolist())):
        members = f[y == c]
        if len(members) == 1:
            terms.append(0.0)
        elif len(members) > k:
            terms.append(len(members) / len(y) * _knn_entropy_by_hand(members, k, min_dist, norm))
    return sum(terms) / len(terms)


def test_tmi_matches_published_steps() -> None:
    f, y = _data(seed=8, n=60, d=3, shift=4.0)
    f = 3.0 * f  # distances mostly above the floor of 1
    assert tmi(f, y) == pytest.approx(_tmi_by_hand(f, y), rel=1e-10)
    assert tmi(f, y, k=2, norm="euclidean", min_dist=0.5) == pytest.approx(
        _tmi_by_hand(f, y, k=2, min_dist=0.5, norm="euclidean"), rel=1e-10)
    # small classes: a singleton counts as 0, a class of 2 (<= k) is left out
    y_small = y.copy()
    y_small[0] = 10
    y_small[[1, 2]] = 11
    assert tmi(f, y_small) == pytest.approx(_tmi_by_hand(f, y_small), rel=1e-10)


def test_tmi_hand_worked() -> None:
    # One class at 0, 2, 5, 9 (1-D, k=1): nearest distances 2, 2, 3, 4 (all above the floor).
    # H = -psi(1) + psi(4) + (1/4) sum log(2 eps) = 1 + 1/2 + 1/3 + (1/4) log(4*4*6*8).
    h = 11.0 / 6.0 + 0.25 * math.log(768.0)
    f = np.array([[0.0], [2.0], [5.0], [9.0], [100.0], [102.0], [105.0], [109.0]])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # two identical classes, prior 1/2 each: mean over classes = h / 2, sum = h.
    assert tmi(f, y, k=1) == pytest.approx(h / 2, rel=1e-12)
    assert tmi(f, y, k=1, aggregate="sum") == pytest.approx(h, rel=1e-12)


def test_tmi_prefers_larger_intra_class_variance_and_is_invariant() -> None:
    rng = np.random.default_rng(9)
    y = np.arange(300) % 3
    spread = 3.0 * rng.normal(size=(300, 4)) + 20.0 * np.eye(3, 4)[y]
    collapsed = 20.0 * np.eye(3, 4)[y] + 0.01 * rng.normal(size=(300, 4))
    with pytest.warns(AdvTransferWarning, match="below min_dist"):
        assert tmi(spread, y) > tmi(collapsed, y)
    base = tmi(spread, y)
    assert tmi(spread, RENAMED[y]) == pytest.approx(base, rel=1e-12)
    perm = rng.permutation(300)
    assert tmi(spread[perm], y[perm]) == pytest.approx(base, rel=1e-12)
    assert tmi(spread + 5.0, y) == pytest.approx(base, rel=1e-10)
    assert tmi(-spread[:, ::-1], y) == pytest.approx(base, rel=1e-12)
    euclid = tmi(spread, y, norm="euclidean")
    assert tmi(spread @ _rotation(4), y, norm="euclidean") == pytest.approx(euclid, rel=1e-10)
    f32 = spread.astype(np.float32)
    assert tmi(torch.from_numpy(f32), torch.from_numpy(y)) == tmi(f32, y)


def test_tmi_floor_hides_small_scale_structure_as_documented() -> None:
    # All k-NN distances below min_dist: the score no longer depends on the features.
    rng = np.random.default_rng(10)
    y = np.arange(90) % 3
    a, b = 1e-3 * rng.normal(size=(90, 2)), 1e-3 * rng.normal(size=(90, 2))
    with pytest.warns(AdvTransferWarning, match="every 3-NN distance .* below min_dist=1.0"):
        assert tmi(a, y) == tmi(b, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one distance above the floor: no warning
        tmi(np.concatenate([a, [[5.0, 5.0]]]), np.concatenate([y, [0]]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"k": 0}, "k"), ({"k": 2.0}, "k"), ({"k": True}, "k"), ({"norm": "l1"}, "norm"),
     ({"min_dist": 0.0}, "min_dist"), ({"min_dist": float("inf")}, "min_dist"),
     ({"aggregate": "max"}, "aggregate")],
)
def test_tmi_rejects_bad_parameters(kwargs: dict, name: str) -> None:
    f, y = _data()
    with pytest.raises(AdvTransferError, match=name):
        tmi(f, y, **kwargs)


def test_tmi_rejects_bad_inputs() -> None:
    f, y = _data()
    with pytest.raises(AdvTransferError, match="features"):
        tmi(f[None], y)
    with pytest.raises(AdvTransferError, match="labels"):
        tmi(f, np.full(len(y), 0.5))
    with pytest.raises(AdvTransferError, match="same number of samples"):
        tmi(f, y[:-1])
