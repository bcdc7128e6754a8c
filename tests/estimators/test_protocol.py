"""Ranking evaluation protocol: measures, bootstrap intervals, ceiling and baselines."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from advtransfer.errors import AdvTransferError
from advtransfer.estimators.protocol import (
    DEFAULT_MEASURES,
    BootstrapInterval,
    Measure,
    ProtocolResult,
    RandomBaseline,
    bootstrap_interval,
    evaluate_methods,
    get_measure,
    random_baseline,
    regret_at_k,
    rel_at_k,
    seed_agreement,
    static_ranker,
)
from advtransfer.estimators.ranking import kendall_tau, weighted_kendall_tau

# ---------------------------------------------------------------------------------------------
# naive re-implementations, following the definitions literally
# ---------------------------------------------------------------------------------------------


def _sgn(x: float) -> int:
    return (x > 0) - (x < 0)


def _tau_b_naive(s: list[float], t: list[float]) -> float:
    """Kendall tau-b by counting concordant, discordant and tied pairs."""
    p = q = tie_s_only = tie_t_only = 0
    for i, j in itertools.combinations(range(len(s)), 2):
        a, b = _sgn(s[i] - s[j]), _sgn(t[i] - t[j])
        if a and b:
            p += a * b > 0
            q += a * b < 0
        elif a == 0 and b:
            tie_s_only += 1
        elif b == 0 and a:
            tie_t_only += 1
    den = math.sqrt((p + q + tie_s_only) * (p + q + tie_t_only))
    return (p - q) / den if den else math.nan


def _tau_w_naive(s: list[float], t: list[float]) -> float:
    """Vigna's additive hyperbolic tau, ranks by decreasing (x, y), averaged over both orders."""
    n = len(s)

    def one_way(x: list[float], y: list[float]) -> float:
        order = sorted(range(n), key=lambda i: (-x[i], -y[i]))
        rank = {i: r for r, i in enumerate(order)}
        num = nx = ny = 0.0
        for i, j in itertools.combinations(range(n), 2):
            w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
            num += w * _sgn(x[i] - x[j]) * _sgn(y[i] - y[j])
            nx += w * (x[i] != x[j])
            ny += w * (y[i] != y[j])
        return num / math.sqrt(nx * ny)

    return (one_way(s, t) + one_way(t, s)) / 2


def _best_top_k_over_tie_orders(s: list[float], t: list[float], k: int) -> float:
    """Average, over every order of the candidates, of the best truth among the k first when
    sorting stably by decreasing score: the expectation over random tie-breaking."""
    values = []
    for perm in itertools.permutations(range(len(s))):
        ranked = sorted(perm, key=lambda i: -s[i])  # stable: ties keep the permutation's order
        values.append(max(t[i] for i in ranked[:k]))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------

# Four candidates a, b, c, d. Scores rank them a > b > c > d; the truth ranks b > a > c > d.
S4 = [0.9, 0.7, 0.4, 0.1]
T4 = [80.0, 90.0, 70.0, 60.0]


def test_measures_hand_computed() -> None:
    # Pairs: (a,b) discordant, the 5 others concordant -> tau_b = (5 - 1) / 6 = 2/3.
    # Weighted tau, ranking by scores: a, b, c, d have ranks 0..3, weights 1, 1/2, 1/3, 1/4;
    # pair weights ab 3/2, ac 4/3, ad 5/4, bc 5/6, bd 3/4, cd 7/12, total 25/4; the only
    # discordant pair ab -> (25/4 - 2 * 3/2) / (25/4) = 13/25. Ranking by truth: b, a, c, d,
    # the pair ab again weighs 1 + 1/2 = 3/2 -> 13/25 too; the average is 13/25 = 0.52.
    # rel@1: top-scored a has 80, the best is 90 -> 8/9; rel@3: {a, b, c} contains b -> 1.
    # regret@1 = 90 - 80 = 10; regret@3 = 0.
    expected = {"weighted_tau": 13 / 25, "kendall_tau": 2 / 3, "rel@1": 8 / 9, "rel@3": 1.0,
                "regret@1": 10.0, "regret@3": 0.0}
    for name, value in expected.items():
        assert get_measure(name)(S4, T4) == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert rel_at_k(S4, T4, 1) == pytest.approx(8 / 9)
    assert regret_at_k(S4, T4, 1) == pytest.approx(10.0)
    assert rel_at_k(S4, T4, 10) == 1.0  # k > M: every candidate is selected


def test_rel_and_regret_ties_hand_computed() -> None:
    # a and b tie for the top score. rel@1 picks either with probability 1/2:
    # (50 + 100) / 2 / 100 = 0.75; by input order ("first", the published code) a -> 0.5.
    s, t = [1.0, 1.0, 0.0], [50.0, 100.0, 80.0]
    assert rel_at_k(s, t, 1) == pytest.approx(0.75)
    assert rel_at_k(s, t, 1, ties="first") == pytest.approx(0.5)
    assert regret_at_k(s, t, 1) == pytest.approx(25.0)
    assert rel_at_k(s, t, 2) == pytest.approx(1.0)  # both tied candidates fit in the top 2
    # a is alone on top (60); b, c, d tie below with 90, 70, 80. k = 2: one of the three joins
    # a, each with probability 1/3 -> (90 + 70 + 80) / 3 = 80. k = 3: two of three join; the
    # best of the pair is 90 unless the pair is {c, d} (probability 1/3, best 80) -> 260 / 3.
    s, t = [2.0, 1.0, 1.0, 1.0], [60.0, 90.0, 70.0, 80.0]
    assert rel_at_k(s, t, 2) == pytest.approx(80 / 90)
    assert rel_at_k(s, t, 3) == pytest.approx(260 / 3 / 90)
    assert regret_at_k(s, t, 3) == pytest.approx(90 - 260 / 3)
    # the tie rule does not depend on the candidates' order
    p = [3, 1, 0, 2]
    assert rel_at_k(np.array(s)[p], np.array(t)[p], 3) == pytest.approx(260 / 3 / 90)


def test_measures_match_brute_force_definitions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 7))
        s = rng.integers(0, 3, n).astype(float).tolist()  # many ties
        t = rng.integers(1, 4, n).astype(float).tolist()
        if len(set(s)) > 1 and len(set(t)) > 1:
            wt = get_measure("weighted_tau")(s, t)
            assert wt == pytest.approx(_tau_w_naive(s, t), rel=1e-10, abs=1e-12)
            assert wt == pytest.approx(weighted_kendall_tau(s, t), rel=1e-12, abs=1e-14)
            kt = get_measure("kendall_tau")(s, t)
            assert kt == pytest.approx(_tau_b_naive(s, t), rel=1e-10, abs=1e-12)
            assert kt == pytest.approx(stats.kendalltau(s, t)[0], rel=1e-10, abs=1e-12)
            assert kt == pytest.approx(kendall_tau(s, t), rel=1e-10, abs=1e-12)
        else:
            assert math.isnan(get_measure("weighted_tau")(s, t))
            assert math.isnan(get_measure("kendall_tau")(s, t))
        for k in range(1, n + 1):
            best = _best_top_k_over_tie_orders(s, t, k)
            assert rel_at_k(s, t, k) == pytest.approx(best / max(t), rel=1e-12)
            assert regret_at_k(s, t, k) == pytest.approx(max(t) - best, abs=1e-12)
            order = sorted(range(n), key=lambda i: -s[i])  # "first": stable, input order
            first = max(t[i] for i in order[:k])
            assert rel_at_k(s, t, k, ties="first") == pytest.approx(first / max(t), rel=1e-12)


def test_perfect_ranking() -> None:
    rng = np.random.default_rng(1)
    t = rng.uniform(40, 90, 7)
    s = 0.1 * t - 2.0
    for k in range(1, 8):
        assert rel_at_k(s, t, k) == 1.0
        assert regret_at_k(s, t, k) == 0.0
    assert get_measure("weighted_tau")(s, t) == pytest.approx(1.0)
    assert get_measure("kendall_tau")(s, t) == pytest.approx(1.0)
    assert get_measure("weighted_tau")(-s, t) == pytest.approx(-1.0)


def test_order_invariance_symmetry_and_torch() -> None:
    rng = np.random.default_rng(2)
    s = rng.integers(0, 4, 8).astype(float)
    t = rng.integers(0, 4, 8).astype(float) + 50
    p = rng.permutation(8)
    for name in DEFAULT_MEASURES:
        m = get_measure(name)
        assert m(s[p], t[p]) == pytest.approx(m(s, t), rel=1e-12, abs=1e-12), name
    for name in ("weighted_tau", "kendall_tau"):
        assert get_measure(name)(t, s) == pytest.approx(get_measure(name)(s, t), rel=1e-12)
    torch = pytest.importorskip("torch")
    for name in DEFAULT_MEASURES:
        m = get_measure(name)
        assert m(torch.tensor(s), torch.tensor(t)) == pytest.approx(m(s, t), rel=1e-12)


def test_nan_scores() -> None:
    s = [0.9, math.nan, 0.4, 0.1]
    # propagate (default): an unscored candidate makes every measure undefined
    for name in DEFAULT_MEASURES:
        assert math.isnan(get_measure(name)(s, T4)), name
    # omit: computed on the scored candidates a, c, d only (truths 80, 70, 60, best 80)
    for name in DEFAULT_MEASURES:
        value = get_measure(name, nan_policy="omit")(s, T4)
        assert value == pytest.approx(get_measure(name)([0.9, 0.4, 0.1], [80.0, 70.0, 60.0]))
    assert rel_at_k(s, T4, 1, nan_policy="omit") == 1.0  # b, the true best, was dropped
    assert math.isnan(get_measure("kendall_tau", nan_policy="omit")([1.0, math.nan],
                                                                     [1.0, 2.0]))


def test_constant_scores() -> None:
    t = [60.0, 90.0, 70.0, 80.0]
    c = [1.0] * 4
    assert math.isnan(get_measure("weighted_tau")(c, t))
    assert math.isnan(get_measure("kendall_tau")(c, t))
    # every candidate tied: the expected value of a random pick, E[max of k of M]
    assert rel_at_k(c, t, 1) == pytest.approx(np.mean(t) / 90)
    # E[best of 2 of 4] = sum_i C(4 - i, 1) / C(4, 2) t_(i) = (3*90 + 2*80 + 1*70) / 6
    assert rel_at_k(c, t, 2) == pytest.approx((3 * 90 + 2 * 80 + 70) / 6 / 90)


def test_measure_errors() -> None:
    with pytest.raises(AdvTransferError, match="k must be an integer >= 1; got 0"):
        rel_at_k(S4, T4, 0)
    with pytest.raises(AdvTransferError, match="k must be an integer"):
        regret_at_k(S4, T4, 1.5)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="ties must be one of"):
        rel_at_k(S4, T4, 1, ties="random")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="nan_policy must be one of"):
        get_measure("rel@1", nan_policy="raise")  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="measure must be 'weighted_tau'"):
        get_measure("rel@0")
    with pytest.raises(AdvTransferError, match="measure must be 'weighted_tau'"):
        get_measure("spearman")
    with pytest.raises(AdvTransferError, match="truth must have a positive maximum"):
        rel_at_k([1, 2], [-1, 0])
    with pytest.raises(AdvTransferError, match="same number of candidates; got 4 and 3"):
        rel_at_k(S4, T4[:3])
    with pytest.raises(AdvTransferError, match="truth must contain only finite values"):
        regret_at_k(S4, [1.0, math.nan, 2.0, 3.0])
    with pytest.raises(AdvTransferError, match="scores must be finite or NaN"):
        regret_at_k([1.0, math.inf, 2.0, 3.0], T4)
    with pytest.raises(AdvTransferError, match="scores must be a 1-D array"):
        rel_at_k([[1.0, 2.0]], [1.0, 2.0])
    with pytest.raises(AdvTransferError, match="at least 2 candidates"):
        rel_at_k([1.0], [1.0])


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------


def _synthetic(n_targets: int, n_cand: int, noise: float, seed: int
               ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    truth, scores = {}, {}
    for i in range(n_targets):
        t = rng.uniform(50, 90, n_cand)
        s = t + rng.normal(0, noise, n_cand)
        truth[f"t{i}"] = {f"c{j}": float(v) for j, v in enumerate(t)}
        scores[f"t{i}"] = {f"c{j}": float(v) for j, v in enumerate(s)}
    return scores, truth


def test_bootstrap_interval_basic_properties() -> None:
    scores, truth = _synthetic(8, 6, 10.0, 3)
    res = bootstrap_interval(scores, truth, "kendall_tau", n_boot=300, seed=5)
    assert isinstance(res, BootstrapInterval)
    per = [kendall_tau(list(scores[tg].values()), list(truth[tg].values())) for tg in truth]
    assert res.estimate == pytest.approx(np.mean(per), rel=1e-12)
    assert res.per_target == pytest.approx(dict(zip(truth, per, strict=True)))
    assert res.low <= res.estimate <= res.high
    assert res.n_boot == 300 and 0 < res.n_valid <= 300
    assert res.over == ("candidates", "targets") and res.level == 0.95
    # reproducible with the seed, different with another
    again = bootstrap_interval(scores, truth, "kendall_tau", n_boot=300, seed=5)
    assert (again.low, again.high, again.sd) == (res.low, res.high, res.sd)
    other = bootstrap_interval(scores, truth, "kendall_tau", n_boot=300, seed=6)
    assert (other.low, other.high) != (res.low, res.high)
    with pytest.raises(AttributeError):
        res.low = 0.0  # type: ignore[misc]


def test_bootstrap_interval_narrows_with_more_targets() -> None:
    widths = []
    for n_targets in (4, 64):
        scores, truth = _synthetic(n_targets, 6, 10.0, 4)
        res = bootstrap_interval(scores, truth, "weighted_tau", n_boot=100, seed=0)
        assert res.low <= res.estimate <= res.high
        widths.append(res.high - res.low)
    assert widths[1] < 0.5 * widths[0]  # ~ 1 / sqrt(16) expected


def test_bootstrap_resampling_modes() -> None:
    scores, truth = _synthetic(5, 5, 5.0, 7)
    sizes = []

    def spy(s: np.ndarray, t: np.ndarray) -> float:
        sizes.append(s.shape[0])
        return float(np.mean(t))

    # targets only: the candidate sets are kept whole, so the measure is only evaluated on the
    # original data and the replicates are means of resampled per-target values
    res = bootstrap_interval(scores, truth, spy, n_boot=50, over="targets")
    assert res.over == ("targets",) and len(sizes) == 5
    per = np.array(list(res.per_target.values()))
    assert per.min() <= res.low <= res.high <= per.max()
    # candidates only: every target is kept, each candidate set redrawn at its size
    sizes.clear()
    res = bootstrap_interval(scores, truth, spy, n_boot=20, over=("candidates",))
    assert res.over == ("candidates",) and set(sizes) == {5} and len(sizes) == 5 + 20 * 5
    # one target only, resampling targets: nothing varies
    one = {"t0": truth["t0"]}
    res = bootstrap_interval({"t0": scores["t0"]}, one, "rel@1", n_boot=30, over="targets")
    assert res.low == res.high == res.estimate


def test_bootstrap_duplicates_and_degenerate_resamples() -> None:
    # Two candidates: a candidate resample is degenerate (constant) with probability 1/2; those
    # replicates are dropped, so n_valid < n_boot, and the valid ones give tau = 1.
    scores = {"t": {"a": 1.0, "b": 2.0}}
    truth = {"t": {"a": 10.0, "b": 20.0}}
    res = bootstrap_interval(scores, truth, "kendall_tau", n_boot=200, over="candidates")
    assert res.estimate == 1.0 and res.low == res.high == 1.0
    assert 50 < res.n_valid < 150
    # duplicated candidates are ties in both scores and truth, ignored by tau_b
    assert get_measure("kendall_tau")([1, 1, 2, 3], [5, 5, 6, 7]) == 1.0
    assert get_measure("weighted_tau")([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)


def test_bootstrap_nan_estimate() -> None:
    scores, truth = _synthetic(3, 4, 5.0, 8)
    scores["t1"]["c2"] = math.nan
    res = bootstrap_interval(scores, truth, "rel@1", n_boot=20)
    assert math.isnan(res.estimate) and math.isnan(res.low) and res.n_valid == 0
    assert math.isnan(res.per_target["t1"]) and not math.isnan(res.per_target["t0"])
    omit = bootstrap_interval(scores, truth, get_measure("rel@1", nan_policy="omit"), n_boot=20)
    assert math.isfinite(omit.estimate) and omit.low <= omit.estimate <= omit.high


def test_bootstrap_errors() -> None:
    scores, truth = _synthetic(2, 3, 5.0, 9)
    with pytest.raises(AdvTransferError, match="n_boot must be an integer >= 1; got 0"):
        bootstrap_interval(scores, truth, "rel@1", n_boot=0)
    with pytest.raises(AdvTransferError, match="level must be a number strictly between 0 and"):
        bootstrap_interval(scores, truth, "rel@1", level=1.5)
    with pytest.raises(AdvTransferError, match="seed must be an integer >= 0"):
        bootstrap_interval(scores, truth, "rel@1", seed=-1)
    with pytest.raises(AdvTransferError, match="over must be a non-empty subset"):
        bootstrap_interval(scores, truth, "rel@1", over="models")
    with pytest.raises(AdvTransferError, match="over must be a non-empty subset"):
        bootstrap_interval(scores, truth, "rel@1", over=())
    with pytest.raises(AdvTransferError, match="measure must be a measure name"):
        bootstrap_interval(scores, truth, 3)
    del scores["t1"]["c0"]
    with pytest.raises(AdvTransferError, match="target 't1': no score for candidate 'c0'"):
        bootstrap_interval(scores, truth, "rel@1")


# ---------------------------------------------------------------------------------------------
# ceiling and baselines
# ---------------------------------------------------------------------------------------------


def test_seed_agreement_hand_computed() -> None:
    runs = {
        # run 0: a 80, b 85, c 70; run 1: a 82, b 81, c 75.
        # tau_b: (a,b) discordant, (a,c), (b,c) concordant -> 1/3 (symmetric).
        # rel@1: run 0 picks b, worth 81 in run 1 (best 82) -> 81/82; run 1 picks a, worth 80 in
        # run 0 (best 85) -> 80/85; mean over the ordered pairs (81/82 + 80/85) / 2.
        "x": {"a": [80.0, 82.0], "b": [85.0, 81.0], "c": [70.0, 75.0]},
        # perfectly repeatable: tau 1, rel@1 1
        "y": {"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]},
    }
    assert seed_agreement(runs, "kendall_tau") == pytest.approx((1 / 3 + 1) / 2)
    assert seed_agreement(runs, "rel@1") == pytest.approx(((81 / 82 + 80 / 85) / 2 + 1) / 2)
    assert seed_agreement(runs, "regret@1") == pytest.approx(((82 - 81) + (85 - 80)) / 2 / 2)
    # three seeds: mean over the 6 ordered pairs, brute force
    rng = np.random.default_rng(10)
    r = rng.uniform(50, 90, (5, 3))
    three = {"t": {f"c{i}": list(r[i]) for i in range(5)}}
    pairs = [rel_at_k(r[:, a], r[:, b], 1) for a in range(3) for b in range(3) if a != b]
    assert seed_agreement(three, "rel@1") == pytest.approx(np.mean(pairs), rel=1e-12)


def test_seed_agreement_errors() -> None:
    with pytest.raises(AdvTransferError, match="at least 2 runs"):
        seed_agreement({"t": {"a": [1.0], "b": [2.0]}}, "kendall_tau")
    with pytest.raises(AdvTransferError, match=r"truth_runs\['t'\]\['b'\] has 3 runs"):
        seed_agreement({"t": {"a": [1.0, 2.0], "b": [2.0, 3.0, 4.0]}}, "kendall_tau")
    with pytest.raises(AdvTransferError, match="must be a sequence of results"):
        seed_agreement({"t": {"a": 1.0, "b": 2.0}}, "kendall_tau")


def test_static_ranker_hand_made_table() -> None:
    truth = {
        "A": {"x": 90.0, "y": 80.0, "z": 70.0},  # ranks x 1, y 2, z 3
        "B": {"x": 60.0, "y": 75.0, "z": 50.0},  # ranks y 1, x 2, z 3
        "C": {"x": 85.0, "y": 85.0, "z": 95.0},  # ranks z 1, x 2.5, y 2.5 (tie)
    }
    got = static_ranker(truth)
    # A from B and C: x (2 + 2.5)/2 = 2.25, y (1 + 2.5)/2 = 1.75, z (3 + 1)/2 = 2
    assert got["A"] == pytest.approx({"x": -2.25, "y": -1.75, "z": -2.0})
    # B from A and C: x (1 + 2.5)/2 = 1.75, y (2 + 2.5)/2 = 2.25, z (3 + 1)/2 = 2
    assert got["B"] == pytest.approx({"x": -1.75, "y": -2.25, "z": -2.0})
    # C from A and B: x (1 + 2)/2 = 1.5, y (2 + 1)/2 = 1.5, z 3
    assert got["C"] == pytest.approx({"x": -1.5, "y": -1.5, "z": -3.0})
    with pytest.raises(AdvTransferError, match="at least 2 targets"):
        static_ranker({"A": truth["A"]})
    with pytest.raises(AdvTransferError, match="same candidates on every target; target 'B'"):
        static_ranker({"A": truth["A"], "B": {"x": 1.0, "w": 2.0, "z": 3.0}})


def test_random_baseline() -> None:
    truth = _synthetic(4, 7, 1.0, 11)[1]  # continuous values: no ties
    for name in ("weighted_tau", "kendall_tau"):
        rb = random_baseline(name, truth, n_draws=1000, seed=0)
        assert isinstance(rb, RandomBaseline)
        assert abs(rb.mean) < 3 * rb.sem  # exact expectation 0
        assert rb.sem == pytest.approx(rb.sd / math.sqrt(1000))
        assert rb.low < 0 < rb.high and rb.estimate == rb.mean
    # rel@1 of a random pick: E = mean(t) / max(t) per target
    exact = np.mean([np.mean(list(t.values())) / max(t.values()) for t in truth.values()])
    rb = random_baseline("rel@1", truth, n_draws=1000, seed=0)
    assert abs(rb.mean - exact) < 3 * rb.sem
    # ... which is also rel@1 of a method that ties every candidate (ties="average")
    tied = {tg: dict.fromkeys(t, 0.0) for tg, t in truth.items()}
    est = bootstrap_interval(tied, truth, "rel@1", n_boot=1).estimate
    assert est == pytest.approx(exact, rel=1e-12)
    again = random_baseline("rel@1", truth, n_draws=1000, seed=0)
    assert again == rb
    with pytest.raises(AdvTransferError, match="n_draws must be an integer >= 1"):
        random_baseline("rel@1", truth, n_draws=0)


# ---------------------------------------------------------------------------------------------
# evaluate_methods
# ---------------------------------------------------------------------------------------------


def _methods() -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(12)
    truth, runs = {}, {}
    for i in range(4):
        base = rng.uniform(50, 90, 5)
        r = base[:, None] + rng.normal(0, 1.0, (5, 3))
        runs[f"t{i}"] = {f"c{j}": list(r[j]) for j in range(5)}
        truth[f"t{i}"] = {f"c{j}": float(r[j].mean()) for j in range(5)}
    scores = {
        "good": {tg: {c: v + rng.normal(0, 2.0) for c, v in t.items()} for tg, t in truth.items()},
        "noise": {tg: {c: rng.normal() for c in t} for tg, t in truth.items()},
    }
    return scores, truth, runs


def test_evaluate_methods_table() -> None:
    scores, truth, runs = _methods()
    res = evaluate_methods(scores, truth, truth_runs=runs, n_boot=60, n_draws=200, seed=3)
    assert isinstance(res, ProtocolResult)
    assert [r.name for r in res.rows] == ["good", "noise", "seed_ceiling", "static_ranker",
                                          "random_ranking"]
    assert [r.kind for r in res.rows] == ["method", "method", "ceiling", "static", "random"]
    assert res.measures == DEFAULT_MEASURES and res.higher_is_better["regret@1"] is False
    # method rows are exactly bootstrap_interval with the same seed and resamples
    for name in ("good", "noise"):
        for m in ("weighted_tau", "rel@3"):
            assert res.row(name).cells[m] == bootstrap_interval(scores[name], truth, m,
                                                                n_boot=60, seed=3)
    assert res.row("seed_ceiling").cells["kendall_tau"].estimate == pytest.approx(
        seed_agreement(runs, "kendall_tau"))
    static = bootstrap_interval(static_ranker(truth), truth, "kendall_tau", n_boot=60, seed=3)
    assert res.row("static_ranker").cells["kendall_tau"] == static
    assert res.row("random_ranking").cells["rel@1"] == random_baseline(
        "rel@1", truth, n_draws=200, seed=3)
    assert res.row("good").cells["weighted_tau"].estimate > 0.5
    rows = res.to_rows()
    assert len(rows) == 5 and rows[0]["name"] == "good" and rows[0]["n_targets"] == 4
    for m in DEFAULT_MEASURES:
        assert {m, f"{m}_low", f"{m}_high", f"{m}_sd"} <= set(rows[0])
        assert all(isinstance(r[m], float) for r in rows)
    with pytest.raises(AdvTransferError, match="no row named 'x'"):
        res.row("x")


def test_evaluate_methods_options_and_nan() -> None:
    scores, truth, _ = _methods()
    scores["good"]["t2"]["c1"] = None  # unscored
    res = evaluate_methods(scores, truth, measures=("kendall_tau", "rel@1"), n_boot=20,
                           n_draws=20, baselines=False)
    assert [r.name for r in res.rows] == ["good", "noise"]
    cell = res.row("good").cells["kendall_tau"]
    assert math.isnan(cell.estimate) and math.isnan(cell.per_target["t2"])
    omit = evaluate_methods(scores, truth, measures=("kendall_tau",), n_boot=20, n_draws=20,
                            nan_policy="omit", baselines=False)
    assert math.isfinite(omit.row("good").cells["kendall_tau"].estimate)
    custom = Measure("spread", lambda s, t: float(np.ptp(t)))
    res = evaluate_methods(scores, truth, measures=[custom], n_boot=5, n_draws=5,
                           baselines=False)
    assert res.measures == ("spread",)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one = evaluate_methods({"m": {"t0": scores["noise"]["t0"]}}, {"t0": truth["t0"]},
                               n_boot=5, n_draws=5, measures=("rel@1",))
    assert [r.name for r in one.rows] == ["m", "random_ranking"]
    assert any("at least 2 targets" in str(w.message) for w in caught)


def test_evaluate_methods_errors() -> None:
    scores, truth, runs = _methods()
    del scores["noise"]["t1"]["c3"]
    with pytest.raises(AdvTransferError,
                       match="method 'noise': scores: target 't1': no score for candidate 'c3'"):
        evaluate_methods(scores, truth, n_boot=5)
    scores, truth, runs = _methods()
    scores["good"]["t0"]["extra"] = 1.0
    with pytest.raises(AdvTransferError, match="method 'good'.*'extra' has a score but no gro"):
        evaluate_methods(scores, truth, n_boot=5)
    scores, truth, runs = _methods()
    del scores["good"]["t3"]
    with pytest.raises(AdvTransferError, match="method 'good': scores has no scores for target"):
        evaluate_methods(scores, truth, n_boot=5)
    scores, truth, runs = _methods()
    with pytest.raises(AdvTransferError, match="reserved for a baseline row"):
        evaluate_methods({"random_ranking": scores["good"]}, truth, n_boot=5)
    with pytest.raises(AdvTransferError, match="measures must have distinct names"):
        evaluate_methods(scores, truth, measures=("rel@1", "rel@1"), n_boot=5)
    with pytest.raises(AdvTransferError, match="truth_runs must name the same targets"):
        evaluate_methods(scores, truth, truth_runs={"t0": runs["t0"]}, n_boot=5)
    with pytest.raises(AdvTransferError, match=r"truth\['t0'\]\['c1'\] must be finite"):
        evaluate_methods(scores, {**truth, "t0": {**truth["t0"], "c1": math.nan}}, n_boot=5)
    with pytest.raises(AdvTransferError, match="n_draws must be an integer >= 2"):
        evaluate_methods(scores, truth, n_draws=1)
