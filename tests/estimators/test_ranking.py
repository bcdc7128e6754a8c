"""Ranking evaluation: correlations, top-k relative accuracy and name alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import weightedtau

from advtransfer.errors import AdvTransferError
from advtransfer.estimators import (
    RankingEvaluation,
    evaluate_ranking,
    kendall_tau,
    pearson,
    top_k_relative_accuracy,
    weighted_kendall_tau,
)

SCORES = [0.3, -1.2, 2.5, 0.9, 1.7, -0.4]
TRUTH = [71.0, 64.5, 80.2, 66.0, 78.9, 70.1]


def _weighted_tau_by_hand(x: list[float], y: list[float]) -> float:
    """Vigna's additive hyperbolic weighted tau for tie-free data, averaged over both rankings."""
    n = len(x)

    def one_way(rank_by: list[float]) -> float:
        order = sorted(range(n), key=lambda i: -rank_by[i])
        rank = {i: r for r, i in enumerate(order)}
        num = den = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
                num += w * math.copysign(1, x[i] - x[j]) * math.copysign(1, y[i] - y[j])
                den += w
        return num / den

    return (one_way(x) + one_way(y)) / 2


def test_weighted_kendall_tau_matches_scipy_and_definition() -> None:
    value = weighted_kendall_tau(SCORES, TRUTH)
    assert value == pytest.approx(weightedtau(SCORES, TRUTH)[0], rel=1e-12)
    assert value == pytest.approx(_weighted_tau_by_hand(SCORES, TRUTH), rel=1e-12)
    assert -1 < value < 1


def test_perfect_ranking() -> None:
    truth = np.array(TRUTH)
    scores = 0.01 * truth - 3  # any increasing map of the truth
    assert weighted_kendall_tau(scores, truth) == pytest.approx(1.0)
    assert kendall_tau(scores, truth) == pytest.approx(1.0)
    assert pearson(scores, truth) == pytest.approx(1.0)
    for k in range(1, len(truth) + 1):
        assert top_k_relative_accuracy(scores, truth, k) == pytest.approx(1.0)


def test_reversed_ranking() -> None:
    truth = np.array(TRUTH)
    scores = -truth
    assert weighted_kendall_tau(scores, truth) == pytest.approx(-1.0)
    assert kendall_tau(scores, truth) == pytest.approx(-1.0)
    assert pearson(scores, truth) == pytest.approx(-1.0)
    assert top_k_relative_accuracy(scores, truth, 1) == pytest.approx(64.5 / 80.2)
    assert top_k_relative_accuracy(scores, truth, 2) == pytest.approx(66.0 / 80.2)
    assert top_k_relative_accuracy(scores, truth, 6) == pytest.approx(1.0)


def test_top_k_relative_accuracy_known_values() -> None:
    # Scores rank candidates 2, 4, 3, 0, 5, 1; truths 80.2, 78.9, 66.0, ...
    assert top_k_relative_accuracy(SCORES, TRUTH, 1) == pytest.approx(1.0)
    shuffled = [2.5, 0.3, -1.2, 0.9, 1.7, -0.4]  # now candidate 0 (truth 71.0) is top
    assert top_k_relative_accuracy(shuffled, TRUTH, 1) == pytest.approx(71.0 / 80.2)
    assert top_k_relative_accuracy(shuffled, TRUTH, 2) == pytest.approx(78.9 / 80.2)
    assert top_k_relative_accuracy(shuffled, TRUTH, 3) == pytest.approx(78.9 / 80.2)
    # Ties in the scores are broken by input order.
    assert top_k_relative_accuracy([1.0, 1.0], [50.0, 100.0], 1) == pytest.approx(0.5)


def test_constant_scores_give_nan_correlations() -> None:
    constant = [1.0] * len(TRUTH)
    assert math.isnan(weighted_kendall_tau(constant, TRUTH))
    assert math.isnan(kendall_tau(constant, TRUTH))
    assert math.isnan(pearson(constant, TRUTH))
    result = evaluate_ranking(
        dict(zip("abcdef", constant, strict=True)), dict(zip("abcdef", TRUTH, strict=True))
    )
    assert math.isnan(result.weighted_tau)
    assert math.isnan(result.pearson)


def test_evaluate_ranking_aligns_by_name() -> None:
    names = ["resnet18", "resnet50", "vit_b16", "mobilenet", "convnext", "densenet"]
    scores = dict(zip(names, SCORES, strict=True))
    truth = {name: TRUTH[i] for i, name in reversed(list(enumerate(names)))}  # other order
    result = evaluate_ranking(scores, truth)
    assert isinstance(result, RankingEvaluation)
    assert result.weighted_tau == pytest.approx(weighted_kendall_tau(SCORES, TRUTH))
    assert result.kendall_tau == pytest.approx(kendall_tau(SCORES, TRUTH))
    assert result.pearson == pytest.approx(pearson(SCORES, TRUTH))
    assert result.top_k == {
        1: pytest.approx(top_k_relative_accuracy(SCORES, TRUTH, 1)),
        3: pytest.approx(top_k_relative_accuracy(SCORES, TRUTH, 3)),
    }
    assert set(evaluate_ranking(scores, truth, ks=(2,)).top_k) == {2}
    with pytest.raises(AttributeError):
        result.pearson = 0.0  # type: ignore[misc]


def test_evaluate_ranking_errors() -> None:
    scores = {"a": 1.0, "b": 2.0, "c": 3.0}
    truth = {"a": 0.5, "b": 0.6, "d": 0.7}
    with pytest.raises(AdvTransferError, match=r"in scores but not in truth: \['c'\].*\['d'\]"):
        evaluate_ranking(scores, truth)
    with pytest.raises(AdvTransferError, match="at least 2 candidates; got 1"):
        evaluate_ranking({"a": 1.0}, {"a": 0.5})
    with pytest.raises(AdvTransferError, match="ks entry must be between 1 and the number"):
        evaluate_ranking({"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 0.6})  # default ks includes 3
    with pytest.raises(AdvTransferError, match=r"scores\['b'\] must be finite"):
        evaluate_ranking({"a": 1.0, "b": float("nan")}, {"a": 0.5, "b": 0.6}, ks=(1,))
    with pytest.raises(AdvTransferError, match="truth must be a mapping"):
        evaluate_ranking(scores, [0.5, 0.6, 0.7])  # type: ignore[arg-type]


def test_array_functions_validate_input() -> None:
    with pytest.raises(AdvTransferError, match="same number of candidates; got 3 and 2"):
        weighted_kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(AdvTransferError, match="at least 2 candidates"):
        pearson([1.0], [2.0])
    with pytest.raises(AdvTransferError, match="scores must be a 1-D array"):
        kendall_tau([[1, 2], [3, 4]], [1, 2])
    with pytest.raises(AdvTransferError, match="truth must contain only finite values"):
        kendall_tau([1, 2], [1, float("nan")])
    with pytest.raises(AdvTransferError, match="k must be between 1 and the number"):
        top_k_relative_accuracy([1, 2], [1, 2], 3)
    with pytest.raises(AdvTransferError, match="k must be an integer"):
        top_k_relative_accuracy([1, 2], [1, 2], 1.5)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="truth must have a positive maximum"):
        top_k_relative_accuracy([1, 2], [-1, 0], 1)


def test_weighted_kendall_tau_convention_with_ties() -> None:
    """scipy's rank=True: Vigna's tau with ranks by decreasing (x, y), averaged with (y, x);
    symmetric in its arguments and independent of the candidates' order, ties included."""

    def one_way(x: list[float], y: list[float]) -> float:
        n = len(x)
        order = sorted(range(n), key=lambda i: (-x[i], -y[i]))  # lexicographic, decreasing
        rank = {i: r for r, i in enumerate(order)}
        num = nx = ny = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
                num += w * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
                nx += w * (x[i] != x[j])
                ny += w * (y[i] != y[j])
        return num / math.sqrt(nx * ny)

    rng = np.random.default_rng(0)
    for _ in range(30):
        s = rng.integers(0, 3, 6).astype(float)
        t = rng.integers(0, 3, 6).astype(float)
        if np.ptp(s) == 0 or np.ptp(t) == 0:
            continue
        value = weighted_kendall_tau(s, t)
        by_hand = (one_way(list(s), list(t)) + one_way(list(t), list(s))) / 2
        assert value == pytest.approx(by_hand, rel=1e-12, abs=1e-14)
        assert weighted_kendall_tau(t, s) == pytest.approx(value, rel=1e-12, abs=1e-14)
        p = rng.permutation(6)
        assert weighted_kendall_tau(s[p], t[p]) == pytest.approx(value, rel=1e-12, abs=1e-14)
