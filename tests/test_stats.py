"""advtransfer.stats: correlations against scipy, exact Spearman p, bootstrap, degenerate data;
within-group correlation against regression on group dummies and exact permutation tests."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from advtransfer.errors import AdvTransferError
from advtransfer.stats import (
    EXACT_SPEARMAN_MAX_N,
    MANTEL_EXACT_MAX_TASKS,
    Correlation,
    correlation,
    correlation_table,
    group_summary,
    mantel,
    within_group_correlation,
    within_group_table,
)

X7 = [0.41, 0.52, 0.33, 0.78, 0.61, 0.12, 0.95]
Y7 = [0.70, 0.66, 0.58, 0.91, 0.73, 0.55, 0.80]


def _all_nan(c: Correlation) -> bool:
    fields = ("pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "spearman_rho",
              "spearman_p", "spearman_ci_low", "spearman_ci_high", "spearman_p_exact")
    return all(math.isnan(getattr(c, f)) for f in fields)


@pytest.mark.parametrize("n", [7, 15])
def test_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    c = correlation(x.tolist(), y.tolist(), n_boot=100)
    pr, sr = sps.pearsonr(x, y), sps.spearmanr(x, y)
    assert c.n == n and c.dropped == 0
    assert c.pearson_r == pytest.approx(pr.statistic, abs=1e-14)
    assert c.pearson_p == pytest.approx(pr.pvalue, rel=1e-12)
    assert c.spearman_rho == pytest.approx(sr.statistic, abs=1e-14)
    assert c.spearman_p == pytest.approx(sr.pvalue, rel=1e-12)
    assert math.isfinite(c.spearman_p_exact) == (n <= EXACT_SPEARMAN_MAX_N)


def test_known_values() -> None:
    # Ranks 1..5 against 2,1,4,3,5: r = rho = 0.8 (sum of squared rank differences = 4).
    c = correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_boot=0)
    assert c.pearson_r == pytest.approx(0.8)
    assert c.spearman_rho == pytest.approx(0.8)
    # rho = 1 - sum(d^2) / 20 at n = 5, so |rho| >= 0.8 iff sum(d^2) <= 4 or >= 36: the identity,
    # 4 adjacent swaps and 3 pairs of disjoint adjacent swaps, and their 8 reversals: 16 of 120.
    assert c.spearman_p_exact == pytest.approx(16 / 120)
    assert math.isnan(c.pearson_ci_low) and c.n_boot_valid == 0


def test_exact_spearman_matches_permutation_test_with_ties() -> None:
    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 6.0])
    y = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 4.0])
    c = correlation(x, y, n_boot=0)
    # Two-sided as P(|rho| >= |rho_obs|) under all 6! pairings (with ties the null is not
    # symmetric, so this is not scipy's default 2 * min(one-sided)).
    ref = sps.permutation_test(
        (y,), lambda yy: abs(sps.spearmanr(x, yy).statistic), permutation_type="pairings",
        n_resamples=np.inf, alternative="greater")
    assert c.spearman_p_exact == pytest.approx(ref.pvalue, rel=1e-12)
    assert c.spearman_p_best == c.spearman_p_exact


def test_small_n_spearman_p_is_honest() -> None:
    # scipy's t approximation says p = 0 for rho = 1 at n = 4; the exact p is 2/4! = 1/12.
    c = correlation([1, 2, 3, 4], [1, 8, 27, 64])
    assert c.spearman_rho == pytest.approx(1.0)
    assert c.spearman_p < 1e-6
    assert c.spearman_p_exact == pytest.approx(1 / 12)
    assert c.spearman_p_best > 0.05


def test_perfect_monotone() -> None:
    x = np.arange(8.0)
    c = correlation(x, np.exp(x))
    assert c.spearman_rho == pytest.approx(1.0, abs=1e-12)
    assert c.pearson_r < 1.0 - 1e-3  # monotone but not linear
    assert -1.0 <= c.spearman_ci_low <= c.spearman_ci_high <= 1.0
    assert c.spearman_ci_low - 1e-12 <= c.spearman_rho <= c.spearman_ci_high + 1e-12
    assert -1.0 <= c.pearson_ci_low <= c.pearson_ci_high <= 1.0
    assert 0 < c.n_boot_valid <= c.n_boot == 2000
    assert c.spearman_p_exact == pytest.approx(2 / math.factorial(8))


@pytest.mark.parametrize("x,y,n", [([], [], 0), ([1.0], [2.0], 1), ([1.0, 2.0], [2.0, 1.0], 2),
                                   ([1.0, 2.0, None], [1.0, 3.0, 2.0], 2)])
def test_too_few_pairs_give_nan_with_note(x: list, y: list, n: int) -> None:
    c = correlation(x, y)
    assert c.n == n
    assert _all_nan(c) and not c.defined
    assert "at least 3" in c.note
    assert c.n_boot_valid == 0


@pytest.mark.parametrize("which", ["x", "y"])
def test_constant_gives_nan_with_note(which: str) -> None:
    const, varied = [0.3] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]
    x, y = (const, varied) if which == "x" else (varied, const)
    c = correlation(x, y, names=("alpha1", "accuracy"))
    assert _all_nan(c)
    assert "constant" in c.note
    assert ("alpha1" if which == "x" else "accuracy") in c.note


def test_non_finite_pairs_dropped_and_counted() -> None:
    x = [*X7, None, 1.0, float("nan"), 2.0]
    y = [*Y7, 0.5, float("inf"), 0.4, None]
    c = correlation(x, y, n_boot=300, seed=3)
    ref = correlation(X7, Y7, n_boot=300, seed=3)
    assert (c.n, c.dropped) == (7, 4)
    assert "4 pair(s)" in c.note
    for f in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p", "pearson_ci_low",
              "pearson_ci_high", "spearman_ci_low", "spearman_ci_high"):
        assert getattr(c, f) == getattr(ref, f)


def test_same_seed_same_interval_other_seed_differs() -> None:
    a = correlation(X7, Y7, seed=11)
    b = correlation(X7, Y7, seed=11)
    other = correlation(X7, Y7, seed=12)
    assert a == b
    assert (a.pearson_ci_low, a.pearson_ci_high) != (other.pearson_ci_low, other.pearson_ci_high)


def test_bootstrap_matches_explicit_loop() -> None:
    """Percentile interval over valid resamples, recomputed one resample at a time."""
    x, y = np.array(X7), np.array(Y7)
    n_boot, seed, conf = 300, 5, 0.9
    c = correlation(x, y, n_boot=n_boot, seed=seed, confidence=conf)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    rs, rhos = [], []
    for row in idx:
        bx, by = x[row], y[row]
        if np.ptp(bx) == 0 or np.ptp(by) == 0:
            continue
        rs.append(sps.pearsonr(bx, by).statistic)
        rhos.append(sps.spearmanr(bx, by).statistic)
    q = [(1 - conf) / 2, (1 + conf) / 2]
    assert c.n_boot_valid == len(rs)
    assert [c.pearson_ci_low, c.pearson_ci_high] == pytest.approx(np.quantile(rs, q), abs=1e-12)
    assert [c.spearman_ci_low, c.spearman_ci_high] == pytest.approx(np.quantile(rhos, q),
                                                                     abs=1e-12)


def test_constant_resamples_are_skipped_and_counted() -> None:
    n_boot = 2000
    c = correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], n_boot=n_boot, seed=0)
    idx = np.random.default_rng(0).integers(0, 3, size=(n_boot, 3))
    constant = int(np.sum(np.all(idx == idx[:, :1], axis=1)))
    assert constant > 0
    assert c.n_boot_valid == n_boot - constant
    assert "skipped" in c.note


def test_to_dict_is_strict_json() -> None:
    for c in (correlation(X7, Y7, n_boot=50), correlation([1, 1, 1], [1, 2, 3])):
        d = c.to_dict()
        json.dumps(d, allow_nan=False)
        assert set(d) >= {"n", "dropped", "pearson_r", "spearman_rho", "n_boot_valid", "note"}
    assert correlation([1, 1, 1], [1, 2, 3]).to_dict()["pearson_r"] is None


@pytest.mark.parametrize("kwargs,match", [
    ({"x": [1, 2, 3], "y": [1, 2]}, "same length"),
    ({"x": [1, 2, "a"], "y": [1, 2, 3]}, r"x\[2\]"),
    ({"x": [1, 2, 3], "y": [1, 2, 3], "confidence": 1.5}, "confidence"),
    ({"x": [1, 2, 3], "y": [1, 2, 3], "n_boot": -1}, "n_boot"),
    ({"x": [1, 2, 3], "y": [1, 2, 3], "seed": 1.5}, "seed"),
    ({"x": np.ones((3, 2)), "y": [1, 2, 3]}, "one-dimensional"),
])
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(AdvTransferError, match=match):
        correlation(**kwargs)


def test_correlation_table() -> None:
    records = [{"source": f"s{i}", "a1": x, "a2": -x if i != 2 else None, "acc": y}
               for i, (x, y) in enumerate(zip(X7, Y7, strict=True))]
    del records[0]["a1"]  # a missing key is a missing value
    rows = correlation_table(records, ["a1", "a2"], ["acc"], n_boot=100, seed=1)
    assert [(r["metric"], r["outcome"]) for r in rows] == [("a1", "acc"), ("a2", "acc")]
    assert rows[0]["n"] == 6 and rows[0]["dropped"] == 1
    assert rows[1]["n"] == 6 and rows[1]["dropped"] == 1
    ref = correlation(X7[1:], Y7[1:], n_boot=100, seed=1)
    assert rows[0]["pearson_r"] == ref.pearson_r
    assert rows[0]["pearson_ci_low"] == ref.pearson_ci_low
    assert rows[1]["spearman_rho"] < 0
    json.dumps(rows, allow_nan=False)
    with pytest.raises(AdvTransferError, match=r"records\[0\]\['source'\]"):
        correlation_table(records, ["source"], ["acc"])
    with pytest.raises(AdvTransferError, match="metrics"):
        correlation_table(records, "a1", ["acc"])


# ----------------------------------------------------------------------------------------------
# Mantel test
# ----------------------------------------------------------------------------------------------


def _off_diagonal(m: np.ndarray) -> np.ndarray:
    return np.array([m[i, j] for i in range(len(m)) for j in range(len(m)) if i != j])


def _mantel_by_hand(a: np.ndarray, b: np.ndarray, method: str) -> tuple[float, float, float]:
    """(statistic, two-sided p, one-sided 'greater' p) by enumerating all n! relabellings with
    scipy's own correlation functions, one permutation at a time."""
    corr = sps.spearmanr if method == "spearman" else sps.pearsonr
    observed = float(corr(_off_diagonal(a), _off_diagonal(b)).statistic)
    null = []
    for perm in itertools.permutations(range(len(a))):
        relabelled = b[np.ix_(perm, perm)]
        null.append(float(corr(_off_diagonal(a), _off_diagonal(relabelled)).statistic))
    null_a = np.array(null)
    two = float(np.mean(np.abs(null_a) >= abs(observed) - 1e-9))
    greater = float(np.mean(null_a >= observed - 1e-9))
    return observed, two, greater


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_mantel_exact_matches_enumeration_by_hand(method: str) -> None:
    a = np.array([[0.0, 0.9, 0.3, 0.2],
                  [0.8, 0.0, 0.4, 0.1],
                  [0.35, 0.5, 0.0, 0.7],
                  [0.15, 0.05, 0.6, 0.0]])
    b = np.array([[9.0, 5.0, 2.0, 1.5],
                  [4.0, 9.0, 3.0, 0.5],
                  [1.0, 3.5, 9.0, 6.0],
                  [2.5, 0.2, 4.5, 9.0]])  # the diagonal must not matter
    stat, two, greater = _mantel_by_hand(a, b, method)
    res = mantel(a, b, method=method)
    assert res.exact and res.n_permutations == 24 and res.n_tasks == 4 and res.n_pairs == 12
    assert res.statistic == pytest.approx(stat, rel=1e-12)
    assert res.p == pytest.approx(two, rel=1e-12)
    assert mantel(a, b, method=method, alternative="greater").p == pytest.approx(greater)
    assert 1 / 24 <= res.p <= 1.0


def test_mantel_is_not_the_pairwise_p_value_when_pairs_share_tasks() -> None:
    # Task 0 stands out in both matrices: a is 1 on every pair involving task 0 and 0 elsewhere,
    # b the same plus small noise. Over the 12 pairs the rank correlation looks strong, yet it
    # rests on one task: the relabellings that keep task 0 in place (6 of the 24) all give the
    # same rho (b's top six pairs are still a's six ones), so the exact Mantel p is 6/24.
    special = np.zeros((4, 4))
    special[0, :] = special[:, 0] = 1.0
    a = special.copy()
    b = special + np.random.default_rng(3).uniform(0.0, 0.1, (4, 4))
    naive = sps.spearmanr(_off_diagonal(a), _off_diagonal(b))
    res = mantel(a, b)
    assert naive.pvalue < 0.01
    assert res.statistic == pytest.approx(naive.statistic, rel=1e-12)
    assert res.p == pytest.approx(6 / 24, rel=1e-12)
    assert res.p == pytest.approx(_mantel_by_hand(a, b, "spearman")[1], rel=1e-12)


def test_mantel_monte_carlo_is_seeded_and_close_to_exact() -> None:
    rng = np.random.default_rng(0)
    n = MANTEL_EXACT_MAX_TASKS + 1
    a = rng.normal(size=(n, n))
    b = a + rng.normal(scale=2.0, size=(n, n))
    first = mantel(a, b, n_permutations=999, seed=5)
    assert not first.exact and first.n_permutations == 999
    assert first.p == mantel(a, b, n_permutations=999, seed=5).p
    # (count + 1) / (n + 1): never 0, and a multiple of 1 / 1000
    assert first.p >= 1 / 1000 and (first.p * 1000) == pytest.approx(round(first.p * 1000))
    obs = sps.spearmanr(_off_diagonal(a), _off_diagonal(b)).statistic
    assert first.statistic == pytest.approx(obs, rel=1e-12)


def test_mantel_leaves_out_missing_pairs_and_degenerate_input() -> None:
    a = np.array([[0, 1, 2, 3], [4, 0, 5, 6], [7, 8, 0, 9], [1, 3, 2, 0]], dtype=float)
    b = a.T.copy() + np.arange(16).reshape(4, 4) % 3
    b[1, 2] = np.nan
    res = mantel(a, b)
    assert res.n_pairs == 11
    keep = np.isfinite(_off_diagonal(b))
    expected = sps.spearmanr(_off_diagonal(a)[keep], _off_diagonal(b)[keep]).statistic
    assert res.statistic == pytest.approx(expected, rel=1e-12)
    flat = mantel(a, np.ones((4, 4)))
    assert math.isnan(flat.statistic) and math.isnan(flat.p) and "constant" in flat.note
    assert math.isnan(mantel(a[:2, :2], a[:2, :2]).p)
    json.dumps(flat.to_dict(), allow_nan=False)
    with pytest.raises(AdvTransferError, match="same shape"):
        mantel(a, a[:3, :3])
    with pytest.raises(AdvTransferError, match="alternative"):
        mantel(a, b, alternative="up")


# ------------------------------------------------------------------------------------------------
# Within-group correlation
# ------------------------------------------------------------------------------------------------

def _dummies(groups: np.ndarray) -> np.ndarray:
    return (groups[:, None] == np.unique(groups)[None, :]).astype(float)


def _grouped_data(seed: int, sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Group effects much larger than a weak within-group slope."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes), dtype=float) / 4, sizes)
    x = 3.0 * g + rng.normal(scale=0.3, size=g.size)
    y = 2.0 * g + 0.4 * (x - 3.0 * g) + rng.normal(scale=0.3, size=g.size)
    return x, y, g


def test_within_r_is_partial_correlation_and_p_t_is_the_ols_t_test() -> None:
    x, y, g = _grouped_data(0, (4, 5, 3, 6, 4))
    w = within_group_correlation(x.tolist(), y.tolist(), g.tolist(), n_boot=0, n_perm=0)
    # residuals of least squares on one dummy per group
    d = _dummies(g)
    rx = x - d @ np.linalg.lstsq(d, x, rcond=None)[0]
    ry = y - d @ np.linalg.lstsq(d, y, rcond=None)[0]
    assert w.r == pytest.approx(np.corrcoef(rx, ry)[0, 1], rel=1e-10)
    # the t test of the slope of x in y ~ x + group dummies (df = n - groups - 1)
    design = np.column_stack([x, d])
    beta, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = x.size - d.shape[1] - 1
    se = math.sqrt(rss[0] / df * np.linalg.inv(design.T @ design)[0, 0])
    assert (w.n, w.groups, w.df) == (22, 5, df)
    assert w.p_t == pytest.approx(2 * sps.t.sf(abs(beta[0] / se), df), rel=1e-7)
    assert math.isnan(w.p) and math.isnan(w.ci_low) and w.note == ""
    pooled = correlation(x, y, n_boot=0)
    assert pooled.pearson_r > 0.9 > abs(w.r)  # the groups carry the pooled correlation


def test_within_permutation_p_matches_exact_enumeration() -> None:
    x, y, g = _grouped_data(3, (3, 3, 3))
    w = within_group_correlation(x, y, g.tolist(), n_boot=0, n_perm=20000, seed=1)
    d = _dummies(g)
    rx, ry = x - d @ (d.T @ x / d.sum(0)), y - d @ (d.T @ y / d.sum(0))
    observed = abs(np.corrcoef(rx, ry)[0, 1])
    blocks = [np.flatnonzero(g == v) for v in np.unique(g)]
    hits = total = 0
    for perms in itertools.product(*(itertools.permutations(b) for b in blocks)):
        idx = np.empty(x.size, dtype=int)
        for b, p in zip(blocks, perms, strict=True):
            idx[b] = p
        hits += abs(np.corrcoef(rx, ry[idx])[0, 1]) >= observed - 1e-12
        total += 1
    exact = hits / total  # 6^3 = 216 within-group permutations
    assert total == 216 and 0.05 < exact < 0.95
    assert w.p == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-4)


def test_within_is_invariant_to_group_shifts_and_bootstrap_stays_in_groups() -> None:
    """Adding any constant per group to x and y changes nothing within groups: r, p and the
    stratified interval (same draws) are unchanged, while the pooled r moves."""
    x, y, g = _grouped_data(5, (5, 5, 5, 5))
    shift = {v: 10.0 * k * (-1) ** k for k, v in enumerate(np.unique(g))}
    xs = x + np.array([shift[v] for v in g])
    ys = y - 3 * np.array([shift[v] for v in g])
    a = within_group_correlation(x, y, g.tolist(), n_boot=500, n_perm=500, seed=2)
    b = within_group_correlation(xs, ys, g.tolist(), n_boot=500, n_perm=500, seed=2)
    assert b.r == pytest.approx(a.r, rel=1e-9)
    assert (b.ci_low, b.ci_high) == pytest.approx((a.ci_low, a.ci_high), rel=1e-9)
    assert b.p == a.p and a.n_boot_valid == 500
    assert a.ci_low <= a.r <= a.ci_high and -1 <= a.ci_low < a.ci_high <= 1
    assert correlation(xs, ys, n_boot=0).pearson_r < 0 < correlation(x, y, n_boot=0).pearson_r


def test_within_degenerate_and_missing() -> None:
    # one pair per group: no degrees of freedom
    w = within_group_correlation([1, 2, 3], [1, 3, 2], [0, 1, 2])
    assert not w.defined and w.df == -1 and "groups + 2" in w.note
    # x differs between groups only
    w = within_group_correlation([1, 1, 2, 2, 3, 3], [1, 2, 3, 4, 5, 7], [0, 0, 1, 1, 2, 2],
                                 names=("alpha", "acc"))
    assert not w.defined and "alpha is constant inside every group" in w.note
    # missing values and missing groups drop the pair; labels may be strings
    x, y, g = _grouped_data(1, (4, 4))
    labels = ["a" if v == 0 else "b" for v in g]
    full = within_group_correlation(x, y, labels, n_boot=0, n_perm=0)
    w = within_group_correlation([*x, None, 1.0], [*y, 0.5, 2.0], [*labels, "a", None],
                                 n_boot=0, n_perm=0)
    assert (w.n, w.dropped, w.groups) == (8, 2, 2) and w.r == pytest.approx(full.r, rel=1e-12)
    assert "2 pair(s)" in w.note
    json.dumps(w.to_dict(), allow_nan=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"groups": [0, 1]}, "one label per pair"),
    ({"groups": "abc"}, "sequence of group labels"),
    ({"groups": [[0], [1], [2]]}, "hashable"),
    ({"groups": [0, 0, 1], "n_perm": -1}, "n_perm"),
])
def test_within_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(AdvTransferError, match=match):
        within_group_correlation([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], **kwargs)


def test_within_group_table_and_group_summary() -> None:
    x, y, g = _grouped_data(2, (3, 4, 3))
    records = [{"share": float(s), "a": float(a), "acc": float(b)}
               for s, a, b in zip(g, x, y, strict=True)]
    records[1]["acc"] = None
    rows = within_group_table(records[::-1], ["a"], ["acc"], "share", n_boot=50, n_perm=50)
    ref = within_group_correlation([r["a"] for r in records[::-1]],
                                   [r["acc"] for r in records[::-1]],
                                   [r["share"] for r in records[::-1]], n_boot=50, n_perm=50,
                                   names=("a", "acc"))
    assert rows == [{"metric": "a", "outcome": "acc", "group": "share", **ref.to_dict()}]
    summary = group_summary(records[::-1], "share", ["a", "acc"])
    assert [s["group"] for s in summary] == [0.0, 0.25, 0.5]  # sorted, not in record order
    assert [s["n"] for s in summary] == [3, 4, 3]
    first = x[:3]
    assert summary[0]["stats"]["a"]["mean"] == pytest.approx(first.sum() / 3, rel=1e-12)
    sd = math.sqrt(((first - first.mean()) ** 2).sum() / 2)
    assert summary[0]["stats"]["a"]["sd"] == pytest.approx(sd, rel=1e-12)
    assert summary[0]["stats"]["acc"]["n"] == 2  # the None is skipped
    assert summary[0]["stats"]["acc"]["mean"] == pytest.approx((y[0] + y[2]) / 2, rel=1e-12)
    one = group_summary([{"g": "x", "v": 1.0}], "g", ["v"])
    assert one[0]["stats"]["v"] == {"n": 1, "mean": 1.0, "sd": None}
