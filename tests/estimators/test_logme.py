"""LogME against a brute-force maximisation of the evidence, and known limits."""

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
    """Maximise the evidence over (log alpha, log beta) by repeatedly zooming a 41x41 grid."""
    centre, half_width = np.array([0.0, 0.0]), 12.0
    best = -np.inf
    for _ in range(9):
        grid = np.linspace(-half_width, half_width, 41)
        for da in grid:
            for db in grid:
                value = _log_evidence(f, y, centre[0] + da, centre[1] + db)
                if value > best:
                    best, best_point = value, centre + np.array([da, db])
        centre, half_width = best_point, half_width / 5
    return best / f.shape[0]


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
    assert logme(f, labels) == pytest.approx(expected, rel=1e-3)


def test_logme_regression_matches_brute_force_evidence() -> None:
    rng = np.random.default_rng(1)
    n, d = 12, 4
    f = rng.normal(size=(n, d))
    targets = np.column_stack(
        [f @ rng.normal(size=d) + 0.3 * rng.normal(size=n), rng.normal(size=n)]
    )
    expected = np.mean([_brute_force_max(f, targets[:, k]) for k in range(2)])
    assert logme(f, targets, regression=True) == pytest.approx(expected, rel=1e-3)
    # A 1-D target is the single-column case.
    assert logme(f, targets[:, 0], regression=True) == pytest.approx(
        _brute_force_max(f, targets[:, 0]), rel=1e-3
    )


@pytest.mark.parametrize(("noise", "signal"), [(1.0, 1.0), (0.3, 3.0)])
def test_logme_matches_brute_force_when_features_outnumber_samples(
    noise: float, signal: float
) -> None:
    # D > N: the D - rank(F) zero eigenvalues of F^T F must still be counted, and with a strong
    # signal the class-1 indicator is fitted exactly (maximum at beta -> inf).
    rng = np.random.default_rng(2)
    n, d = 8, 13
    labels = np.array([0, 1] * 4)
    f = noise * rng.normal(size=(n, d)) + signal * labels[:, None] * rng.normal(size=d)
    expected = np.mean([_brute_force_max(f, (labels == c).astype(float)) for c in range(2)])
    assert logme(f, labels) == pytest.approx(expected, rel=1e-3)


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
    # the maximum is that of the model w = 0 (up to the 1e-5 guard).
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 100)
    f = rng.normal(size=(200, 3))
    value = logme(f, labels)
    noise_only = 0.5 * np.log(2.0) - 0.5 - 0.5 * np.log(2 * np.pi)  # beta = N / ||y||^2 = 2
    assert value >= noise_only - 1e-6
    assert value == pytest.approx(noise_only, rel=1e-3)


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
