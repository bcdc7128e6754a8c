"""LogME: the reference code's steps (default), the paper's maximum evidence (option), limits.

The default ``algorithm="code"`` follows thuml/LogME ``LogME.py`` (``_fit_fixed_point``) step by
step and is checked against a literal re-implementation below. ``algorithm="paper"`` (this
library's default before) is checked against a brute-force maximisation of the evidence and
against values pinned from the previous code.
"""

from __future__ import annotations

import numpy as np
import pytest

from advtransfer.estimators import logme


def _log_evidence(f: np.ndarray, y: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """log p(y | F, alpha, beta): y ~ N(0, I / beta + F F^T / alpha), straight from the model."""
    n = f.shape[0]
    cov = np.eye(n) * np.exp(-log_beta) + f @ f.T * np.exp(-log_alpha)
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y)))


def _noise_only(y: np.ndarray) -> float:
    """Per-sample evidence of the model w = 0, y ~ N(0, I / beta), at its best beta."""
    y = np.asarray(y, dtype=float)
    beta = len(y) / (y @ y)
    return float(0.5 * np.log(beta) - 0.5 - 0.5 * np.log(2 * np.pi))


def _brute_force_max(f: np.ndarray, y: np.ndarray) -> float:
    """Maximise the evidence over (log alpha, log beta) by repeatedly zooming a 41x41 grid.

    The grid is evaluated at once through the eigen-decomposition F F^T = Q diag(lam) Q^T:
    cov = Q diag(1 / beta + lam / alpha) Q^T; the best point is re-checked with the direct
    formula :func:`_log_evidence`."""
    n = f.shape[0]
    lam, q = np.linalg.eigh(f @ f.T)
    lam = np.maximum(lam, 0.0)
    z2 = (q.T @ y) ** 2
    centre, half_width = np.array([0.0, 0.0]), 12.0
    best = -np.inf
    for _ in range(9):
        grid = np.linspace(-half_width, half_width, 41)
        la = centre[0] + grid[:, None, None]
        lb = centre[1] + grid[None, :, None]
        var = np.exp(-lb) + lam * np.exp(-la)  # (41, 41, n) eigenvalues of cov
        values = -0.5 * (n * np.log(2 * np.pi) + np.log(var).sum(-1) + (z2 / var).sum(-1))
        i, j = np.unravel_index(int(np.argmax(values)), values.shape)
        if values[i, j] > best:
            best, best_point = float(values[i, j]), np.array([la[i, 0, 0], lb[0, j, 0]])
        centre, half_width = best_point, half_width / 5
    assert _log_evidence(f, y, *best_point) == pytest.approx(best, rel=1e-9, abs=1e-9)
    return best / n


def test_logme_classification_matches_brute_force_evidence() -> None:
    rng = np.random.default_rng(0)
    n, d = 14, 3
    labels = np.array([0, 1, 2] * 4 + [0, 1])
    f = rng.normal(size=(n, d)) + 3.0 * np.eye(3)[labels]
    per_class = [_brute_force_max(f, (labels == c).astype(float)) for c in range(3)]
    # The maximum is interior (well above the noise-only model), so the fixed point is exercised.
    for c, value in enumerate(per_class):
        assert value > _noise_only(labels == c) + 0.05
    expected = np.mean(per_class)
    assert logme(f, labels, algorithm="paper") == pytest.approx(expected, rel=1e-3)
    # D <= N with an interior maximum: the reference code's steps reach the same value.
    assert logme(f, labels) == pytest.approx(expected, rel=1e-3)


def test_logme_regression_matches_brute_force_evidence() -> None:
    rng = np.random.default_rng(1)
    n, d = 12, 4
    f = rng.normal(size=(n, d))
    targets = np.column_stack(
        [f @ rng.normal(size=d) + 0.3 * rng.normal(size=n), rng.normal(size=n)]
    )
    expected = np.mean([_brute_force_max(f, targets[:, k]) for k in range(2)])
    assert logme(f, targets, regression=True, algorithm="paper") == pytest.approx(expected,
                                                                                  rel=1e-3)
    # A 1-D target is the single-column case.
    assert logme(f, targets[:, 0], regression=True, algorithm="paper") == pytest.approx(
        _brute_force_max(f, targets[:, 0]), rel=1e-3
    )


@pytest.mark.parametrize(("noise", "signal"), [(1.0, 1.0), (0.3, 3.0)])
def test_logme_matches_brute_force_when_features_outnumber_samples(
    noise: float, signal: float
) -> None:
    # algorithm="paper": the D - rank(F) zero eigenvalues of F^T F must still be counted, and
    # with a strong signal the class-1 indicator is fitted exactly (maximum at beta -> inf). The
    # default (the reference code) leaves them out; see test_logme_code_* below.
    rng = np.random.default_rng(2)
    n, d = 8, 13
    labels = np.array([0, 1] * 4)
    f = noise * rng.normal(size=(n, d)) + signal * labels[:, None] * rng.normal(size=d)
    expected = np.mean([_brute_force_max(f, (labels == c).astype(float)) for c in range(2)])
    assert logme(f, labels, algorithm="paper") == pytest.approx(expected, rel=1e-3)


def test_logme_informative_beats_noise_classification() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=400)
    noise = rng.normal(size=(400, 16))
    informative = noise + 2.0 * np.eye(4)[labels] @ rng.normal(size=(4, 16))
    assert logme(informative, labels) > logme(noise, labels) + 0.05


def test_logme_informative_beats_noise_regression() -> None:
    rng = np.random.default_rng(4)
    f = rng.normal(size=(300, 10))
    target = f @ rng.normal(size=10) + 0.1 * rng.normal(size=300)
    noise = rng.normal(size=(300, 10))
    assert logme(f, target, regression=True) > logme(noise, target, regression=True) + 0.5


def test_logme_of_noise_features_is_the_noise_only_evidence() -> None:
    # Features far less informative than noise: the evidence increases towards alpha -> inf, so
    # the maximum is that of the model w = 0 (up to the 1e-5 guard), which "paper" returns; the
    # reference code's fixed point (default) is slightly below it.
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 100)
    f = rng.normal(size=(200, 3))
    value = logme(f, labels, algorithm="paper")
    noise_only = 0.5 * np.log(2.0) - 0.5 - 0.5 * np.log(2 * np.pi)  # beta = N / ||y||^2 = 2
    assert value >= noise_only - 1e-6
    assert value == pytest.approx(noise_only, rel=1e-3)
    code = logme(f, labels)
    assert value - 5e-3 < code <= value + 1e-9


def test_logme_zero_features_give_the_noise_only_evidence() -> None:
    labels = np.array([0, 1, 1, 0, 1, 1])
    value = logme(np.zeros((6, 3)), labels)
    # With F = 0 the evidence is that of y ~ N(0, I / beta) at beta = N / ||y||^2.
    per_column = []
    for c in range(2):
        y = (labels == c).astype(float)
        beta = len(y) / (y @ y)
        per_column.append(
            0.5 * np.log(beta) - 0.5 * beta * (y @ y) / len(y) - 0.5 * np.log(2 * np.pi)
        )
    assert value == pytest.approx(np.mean(per_column), rel=1e-4)
    # the same for the reference steps (which would take log(0)), in both SVD branches
    assert logme(np.zeros((6, 3)), labels, algorithm="paper") == pytest.approx(value, rel=1e-12)
    assert logme(np.zeros((6, 9)), labels) == pytest.approx(value, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Default: the reference code's steps (thuml/LogME, LogME.py, LogME._fit_fixed_point)
# ---------------------------------------------------------------------------------------------


def _thuml_fixed_point(f: np.ndarray, y: np.ndarray, regression: bool = False,
                       ) -> tuple[float, list[float]]:
    """thuml/LogME ``_fit_fixed_point`` literally, with plain loops: returns the score and the
    final alpha of every target column."""
    n, d = f.shape
    if n > d:  # truncated_svd: SVD of F^T F, s = sqrt, keep s > 1e-10, u = F V / s
        _, s, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s)
        k = int(sum(1 for v in s if v > 1e-10))
        u = (f @ vh.T)[:, :k] / s[:k].reshape(1, -1)
        s = s[:k]
    else:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = [float(v) ** 2 for v in s]
    columns = y.shape[1] if regression else int(y.max() + 1)
    evidences, alphas = [], []
    for i in range(columns):
        y_ = y[:, i] if regression else (y == i).astype(np.float64)
        x = [float(u[:, j] @ y_) for j in range(len(sigma))]
        x2 = [v * v for v in x]
        res_x2 = float(y_ @ y_) - sum(x2)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = sum(sj / (sj + t) for sj in sigma)
            m2 = sum(sj * xj / (t + sj) ** 2 for sj, xj in zip(sigma, x2, strict=True))
            res2 = sum(xj / (1 + sj / t) ** 2 for sj, xj in zip(sigma, x2, strict=True)) + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
                    - 0.5 * sum(np.log(alpha + beta * sj) for sj in sigma)
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
        evidences.append(evidence / n)
        alphas.append(alpha)
    return float(np.mean(evidences)), alphas


def _logme_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    rng.shuffle(y)
    return rng.normal(size=(n, d)) + 1.2 * rng.normal(size=(3, d))[y], y


@pytest.mark.parametrize(("n", "d", "seed"), [(30, 50, 20240603), (60, 8, 20240604),
                                               (25, 25, 11), (40, 120, 12)])
def test_logme_default_is_the_reference_code(n: int, d: int, seed: int) -> None:
    f, y = _logme_data(n, d, seed)
    expected, _ = _thuml_fixed_point(f, y)
    assert logme(f, y) == pytest.approx(expected, rel=1e-8)
    assert logme(f, y, algorithm="code") == logme(f, y)


def test_logme_code_regression_is_the_reference_code() -> None:
    rng = np.random.default_rng(13)
    for n, d in ((50, 6), (20, 35)):
        f = rng.normal(size=(n, d))
        targets = np.column_stack([f @ rng.normal(size=d) + 0.3 * rng.normal(size=n),
                                   rng.normal(size=n)])
        expected, _ = _thuml_fixed_point(f, targets, regression=True)
        assert logme(f, targets, regression=True) == pytest.approx(expected, rel=1e-8)


def test_logme_previous_default_is_the_paper_option() -> None:
    # Values of logme(f, y) computed by the previous code (which is algorithm="paper" now).
    f, y = _logme_data(30, 50, 20240603)
    assert logme(f, y, algorithm="paper") == pytest.approx(0.19459824708455783, rel=1e-10)
    assert logme(f, y) == pytest.approx(2.5476, rel=1e-4)  # D > N: the code's value is far off
    f, y = _logme_data(60, 8, 20240604)
    assert logme(f, y, algorithm="paper") == pytest.approx(-0.36371116356581085, rel=1e-10)


def test_logme_code_and_paper_agree_when_features_do_not_outnumber_samples() -> None:
    # D <= N, informative features: same function, same fixed point (the reference's looser
    # stopping rule costs nothing measurable here; at D = N, where the iteration converges
    # slowly, its 11-step limit can leave ~1e-4, and columns whose maximum is a boundary value
    # of "paper" leave up to a few 1e-3).
    for seed, (n, d) in enumerate([(60, 8), (200, 30), (45, 40), (120, 3)]):
        f, y = _logme_data(n, d, 100 + seed)
        assert logme(f, y) == pytest.approx(logme(f, y, algorithm="paper"), rel=1e-6)
    # D > N: they do not agree.
    f, y = _logme_data(30, 50, 20240603)
    assert logme(f, y) > logme(f, y, algorithm="paper") + 1.0


def test_logme_code_counts_the_width_through_log_alpha() -> None:
    # Appending zero columns leaves the model's evidence unchanged ("paper"), while the
    # reference code's value gains log(alpha) / (2N) per column and target column.
    f, y = _logme_data(30, 50, 20240603)
    wider = np.hstack([f, np.zeros((30, 20))])
    assert logme(wider, y, algorithm="paper") == pytest.approx(logme(f, y, algorithm="paper"),
                                                               rel=1e-10)
    _, alphas = _thuml_fixed_point(f, y)
    gain = 20 * np.mean(np.log(alphas)) / (2 * 30)
    assert logme(wider, y) - logme(f, y) == pytest.approx(gain, rel=1e-8)


@pytest.mark.parametrize("algorithm", ["code", "paper"])
@pytest.mark.parametrize(("n", "d"), [(60, 8), (30, 50)])
def test_logme_invariances(algorithm: str, n: int, d: int) -> None:
    import torch

    f, y = _logme_data(n, d, 21)
    rng = np.random.default_rng(22)
    base = logme(f, y, algorithm=algorithm)
    order = rng.permutation(n)
    assert logme(f[order], y[order], algorithm=algorithm) == pytest.approx(base, rel=1e-8)
    assert logme(f, np.array([5, -1, 9])[y], algorithm=algorithm) == pytest.approx(base,
                                                                                   rel=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # the evidence depends on F F^T only
    assert logme(f @ q, y, algorithm=algorithm) == pytest.approx(base, rel=1e-7)
    assert logme(torch.tensor(f), torch.tensor(y), algorithm=algorithm) == pytest.approx(
        base, rel=1e-12)


def test_logme_separable_beats_random_with_both_algorithms() -> None:
    rng = np.random.default_rng(23)
    y = np.repeat(np.arange(3), 30)
    separable = 5.0 * np.eye(3, 6)[y] + 0.1 * rng.normal(size=(90, 6))
    random = rng.normal(size=(90, 6))
    for algorithm in ("code", "paper"):
        assert logme(separable, y, algorithm=algorithm) > logme(random, y,
                                                                algorithm=algorithm) + 0.3


@pytest.mark.parametrize("algorithm", ["fixed_point", "", None, "Code"])
def test_logme_rejects_unknown_algorithm(algorithm: object) -> None:
    from advtransfer.errors import AdvTransferError

    with pytest.raises(AdvTransferError, match="algorithm"):
        logme(np.eye(4), np.array([0, 0, 1, 1]), algorithm=algorithm)
