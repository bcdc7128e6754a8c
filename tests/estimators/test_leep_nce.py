"""LEEP and NCE: hand-worked examples and known limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advtransfer.estimators import leep, nce


def _leep_by_hand(theta: list[list[float]], labels: list[int]) -> float:
    """LEEP with plain Python loops, straight from the definition in Nguyen et al. (2020)."""
    n, n_z = len(theta), len(theta[0])
    classes = sorted(set(labels))
    joint = {(y, z): 0.0 for y in classes for z in range(n_z)}
    for i in range(n):
        for z in range(n_z):
            joint[(labels[i], z)] += theta[i][z] / n
    p_z = [sum(joint[(y, z)] for y in classes) for z in range(n_z)]
    total = 0.0
    for i in range(n):
        eep = sum(joint[(labels[i], z)] / p_z[z] * theta[i][z] for z in range(n_z))
        total += math.log(eep)
    return total / n


def test_leep_hand_worked_value() -> None:
    theta = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]]
    labels = [0, 1, 1, 0]
    # Worked by hand: P(y=0,z) = ([.7,.2,.1] + [.5,.25,.25]) / 4 = [.3, .1125, .0875],
    # P(y=1,z) = ([.1,.8,.1] + [.3,.3,.4]) / 4 = [.1, .275, .125], P(z) = [.4, .3875, .2125].
    p0 = np.array([0.3, 0.1125, 0.0875]) / np.array([0.4, 0.3875, 0.2125])
    p1 = 1 - p0
    expected = np.mean(
        [
            np.log(np.dot(p0, theta[0])),
            np.log(np.dot(p1, theta[1])),
            np.log(np.dot(p1, theta[2])),
            np.log(np.dot(p0, theta[3])),
        ]
    )
    assert leep(np.array(theta), np.array(labels)) == pytest.approx(expected, rel=1e-12)
    assert leep(np.array(theta), np.array(labels)) == pytest.approx(
        _leep_by_hand(theta, labels), rel=1e-12
    )


def test_leep_matches_loop_implementation_on_random_data() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 5))
    theta = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=40)
    assert leep(theta, labels) == pytest.approx(
        _leep_by_hand(theta.tolist(), labels.tolist()), rel=1e-10
    )


def test_leep_is_zero_for_perfect_one_to_one_predictions() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0, 1])
    mapping = np.array([2, 0, 1])  # target class y is predicted as source class mapping[y]
    theta = np.zeros((labels.size, 4))
    theta[np.arange(labels.size), mapping[labels]] = 1.0
    assert leep(theta, labels) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_leep_is_log_one_over_c_for_uniform_predictions(n_classes: int) -> None:
    labels = np.repeat(np.arange(n_classes), 20)
    theta = np.full((labels.size, 7), 1 / 7)
    assert leep(theta, labels) == pytest.approx(math.log(1 / n_classes), rel=1e-10)


def test_leep_informative_beats_uninformative() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    informative = np.full((300, 3), 0.1)
    informative[np.arange(300), labels] = 0.8
    uniform = np.full((300, 3), 1 / 3)
    assert leep(informative, labels) > leep(uniform, labels) + 0.1


def _nce_by_hand(z: list[int], y: list[int]) -> float:
    n = len(z)
    joint: dict[tuple[int, int], int] = {}
    count_z: dict[int, int] = {}
    for zi, yi in zip(z, y, strict=True):
        joint[(yi, zi)] = joint.get((yi, zi), 0) + 1
        count_z[zi] = count_z.get(zi, 0) + 1
    return sum(c / n * math.log(c / count_z[zz]) for (_, zz), c in joint.items())


def test_nce_hand_worked_value() -> None:
    z = [0, 0, 0, 1, 1, 1]
    y = [0, 0, 1, 1, 1, 1]
    # z=0: P(y|z) = (2/3, 1/3); z=1: y is certain. -H(Y|Z) = 1/2 (2/3 ln 2/3 + 1/3 ln 1/3).
    expected = 0.5 * (2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert nce(np.array(z), np.array(y)) == pytest.approx(expected, rel=1e-12)
    assert nce(np.array(z), np.array(y)) == pytest.approx(_nce_by_hand(z, y), rel=1e-12)


def test_nce_matches_loop_implementation_on_random_data() -> None:
    rng = np.random.default_rng(4)
    z = rng.integers(0, 6, size=80)
    y = rng.integers(0, 4, size=80)
    assert nce(z, y) == pytest.approx(_nce_by_hand(z.tolist(), y.tolist()), rel=1e-10)


def test_nce_is_zero_when_target_is_a_function_of_source() -> None:
    z = np.array([0, 1, 2, 3, 4, 5, 0, 3, 5, 2])
    y = np.array([7, 7, 8, 9, 8, 9])[z]  # many-to-one map from source to target labels
    assert nce(z, y) == pytest.approx(0.0, abs=1e-12)


def test_nce_is_minus_label_entropy_for_constant_source() -> None:
    y = np.array([0, 0, 1, 2])
    z = np.zeros(4, dtype=int)
    expected = 0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)
    assert nce(z, y) == pytest.approx(expected, rel=1e-12)
