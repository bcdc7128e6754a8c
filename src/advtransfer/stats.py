"""Correlation between transferability metrics and knowledge-transfer outcomes.

For finite pairs (x_i, y_i), i = 1..n:

    Pearson   r   = sum_i dx_i dy_i / sqrt(sum_i dx_i^2 * sum_i dy_i^2),
                    dx_i = x_i - mean(x),  dy_i = y_i - mean(y)
    Spearman  rho = Pearson r of the ranks of x and y (ties get their average rank)

with two-sided p-values from :func:`scipy.stats.pearsonr` and :func:`scipy.stats.spearmanr`
(null hypothesis: no correlation). scipy's Spearman p-value uses the t approximation
t = rho sqrt((n - 2) / (1 - rho^2)), which is badly wrong for small n (n = 4 and rho = 1 give
p = 0, while only 2 of the 4! = 24 orderings reach |rho| = 1, so the exact p is 1/12). For
n <= ``EXACT_SPEARMAN_MAX_N`` the exact permutation p-value is therefore also reported:

    spearman_p_exact = #{permutations pi of y : |rho(x, y_pi)| >= |rho(x, y)|} / n!

(:attr:`Correlation.spearman_p_best` picks it when available).

Uncertainty is a percentile bootstrap: ``n_boot`` resamples of the n pairs drawn with
replacement, the statistic recomputed on each, and the interval ``[q_{(1-c)/2}, q_{(1+c)/2}]``
of the valid resamples for confidence c. A resample in which either variable is constant has no
correlation and is skipped (``n_boot_valid`` counts the rest). The percentile interval need not
contain the point estimate, and with few pairs it is rough (perfectly monotone data collapse
it to a point).

Within-group correlation (:func:`within_group_correlation`). When the records come in groups
set by design (e.g. the share of the target's classes a source was trained on), a pooled
correlation of x and y can be carried entirely by the group: both follow the design variable.
The within-group (partial) correlation removes it. With g(i) the group of pair i,

    x~_i = x_i - mean{x_j : g(j) = g(i)},   y~_i likewise,
    r_w  = sum_i x~_i y~_i / sqrt(sum_i x~_i^2 * sum_i y~_i^2),

which is the partial correlation of x and y given the group indicators (x~, y~ are the residuals
of the least-squares fit of x and y on one dummy per group). Its uncertainty:

* permutation p-value: y permuted within each group (the null of no association inside groups,
  whatever the group effects), ``p = (1 + #{|r_w(x, y_pi)| >= |r_w(x, y)|}) / (1 + n_perm)``;
* ``p_t``: the t test of a partial correlation, ``t = r_w sqrt(df / (1 - r_w^2))`` with
  ``df = n - G - 1`` for G groups (exact for normal residuals);
* a stratified percentile bootstrap: each group resampled with replacement to its own size,
  r_w recomputed (resamples in which x~ or y~ is identically zero are skipped).

Nothing here raises on degenerate data: with fewer than three finite pairs or a constant variable
every statistic is NaN and ``note`` says why. Only malformed arguments raise
:class:`~advtransfer.errors.AdvTransferError`.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from advtransfer.errors import AdvTransferError
from advtransfer.fileio import to_jsonable

__all__ = [
    "EXACT_SPEARMAN_MAX_N",
    "MANTEL_EXACT_MAX_TASKS",
    "Correlation",
    "MantelResult",
    "WithinCorrelation",
    "correlation",
    "correlation_table",
    "group_summary",
    "mantel",
    "within_group_correlation",
    "within_group_table",
]

_NAN = float("nan")

#: Largest n for which the exact Spearman permutation p-value is computed (9! = 362880).
EXACT_SPEARMAN_MAX_N = 9


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of finite pairs, with percentile bootstrap intervals.

    ``n`` is the number of finite pairs used, ``dropped`` the number of pairs left out because
    either value was missing, NaN or infinite. Statistics that cannot be computed are NaN and
    ``note`` explains why (empty when everything was computed).
    """

    n: int
    dropped: int
    pearson_r: float
    pearson_p: float
    pearson_ci_low: float
    pearson_ci_high: float
    spearman_rho: float
    spearman_p: float
    spearman_ci_low: float
    spearman_ci_high: float
    spearman_p_exact: float
    confidence: float
    n_boot: int
    n_boot_valid: int
    seed: int
    note: str = ""

    @property
    def defined(self) -> bool:
        """Whether the point estimates could be computed (not NaN)."""
        return math.isfinite(self.pearson_r) and math.isfinite(self.spearman_rho)

    @property
    def spearman_p_best(self) -> float:
        """The exact permutation p-value when computed (small n), else scipy's."""
        if math.isfinite(self.spearman_p_exact):
            return self.spearman_p_exact
        return self.spearman_p

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN becomes ``None``."""
        return to_jsonable(asdict(self))


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """1-D float array; ``None`` becomes NaN. Non-numeric entries raise."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise AdvTransferError(f"{name} must be one-dimensional, got shape {values.shape}")
        if values.dtype.kind in "biuf":
            return values.astype(float)
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise AdvTransferError(
            f"{name} must be a sequence of numbers (None allowed for missing), "
            f"got {type(values).__name__}"
        )
    out = np.empty(len(values), dtype=float)
    for i, v in enumerate(values):
        if v is None:
            out[i] = _NAN
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[i] = float(v)
        else:
            raise AdvTransferError(
                f"{name}[{i}] must be a real number or None, got {type(v).__name__} {v!r}"
            )
    return out


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``a`` and ``b`` (shape (B, n)); rows must not be constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", a, b)
    den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    return np.clip(num / den, -1.0, 1.0)


@functools.lru_cache(maxsize=EXACT_SPEARMAN_MAX_N)
def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def _exact_spearman_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided exact permutation p-value of Spearman's rho (average ranks for ties)."""
    rx = sps.rankdata(x)
    ry = sps.rankdata(y)
    observed = abs(float(_rowwise_pearson(rx[None, :], ry[None, :])[0]))
    perms = _all_permutations(x.size)
    null = np.abs(_rowwise_pearson(np.broadcast_to(rx, perms.shape), ry[perms]))
    # A small tolerance so that permutations tying the observed value count despite rounding.
    return float(np.mean(null >= observed - 1e-9))


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if values.size == 0:
        return _NAN, _NAN
    lo, hi = np.quantile(values, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


def _undefined(n: int, dropped: int, confidence: float, n_boot: int, seed: int,
               note: str) -> Correlation:
    return Correlation(n=n, dropped=dropped, pearson_r=_NAN, pearson_p=_NAN,
                       pearson_ci_low=_NAN, pearson_ci_high=_NAN, spearman_rho=_NAN,
                       spearman_p=_NAN, spearman_ci_low=_NAN, spearman_ci_high=_NAN,
                       spearman_p_exact=_NAN,
                       confidence=confidence, n_boot=n_boot, n_boot_valid=0, seed=seed,
                       note=note)


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise AdvTransferError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_options(n_boot: Any, seed: Any, confidence: Any,
                   names: Any) -> tuple[int, int, float]:
    n_boot, seed = _nonneg_int(n_boot, "n_boot"), _nonneg_int(seed, "seed")
    if (isinstance(confidence, bool) or not isinstance(confidence, numbers.Real)
            or not 0.0 < float(confidence) < 1.0):
        raise AdvTransferError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if (not isinstance(names, tuple) or len(names) != 2
            or not all(isinstance(v, str) for v in names)):
        raise AdvTransferError(f"names must be a tuple of two strings, got {names!r}")
    return n_boot, seed, float(confidence)


def _pair_arrays(x: Any, y: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    xa = _as_float_array(x, names[0])
    ya = _as_float_array(y, names[1])
    if xa.shape != ya.shape:
        raise AdvTransferError(
            f"{names[0]} and {names[1]} must have the same length, got {xa.shape[0]} and "
            f"{ya.shape[0]}"
        )
    return xa, ya


def _scipy_tests(xa: np.ndarray, ya: np.ndarray, notes: list[str]) -> tuple[Any, Any]:
    """scipy's ``pearsonr`` and ``spearmanr`` of the pairs; each distinct warning scipy raises
    is appended to ``notes`` once (first line, prefixed ``"scipy: "``) instead of escaping."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pr = sps.pearsonr(xa, ya)
        sr = sps.spearmanr(xa, ya)
    for w in caught:
        msg = "scipy: " + str(w.message).split("\n")[0]
        if msg not in notes:
            notes.append(msg)
    return pr, sr


def _bootstrap_intervals(xa: np.ndarray, ya: np.ndarray, n_boot: int, seed: int,
                         confidence: float, notes: list[str],
                         ) -> tuple[tuple[float, float], tuple[float, float], int]:
    """Percentile intervals of Pearson r and Spearman rho over ``n_boot`` resamples of the
    pairs (indices ``default_rng(seed).integers(0, n, (n_boot, n))``); resamples where a
    variable is constant are skipped (said in ``notes``). Returns (Pearson interval, Spearman
    interval, number of resamples used); NaN intervals and 0 when ``n_boot`` is 0."""
    p_ci = s_ci = (_NAN, _NAN)
    n_valid = 0
    if n_boot == 0:
        return p_ci, s_ci, n_valid
    n = int(xa.size)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    bx, by = xa[idx], ya[idx]
    valid = (np.ptp(bx, axis=1) > 0) & (np.ptp(by, axis=1) > 0)
    n_valid = int(valid.sum())
    bx, by = bx[valid], by[valid]
    if n_valid:
        p_ci = _percentile_interval(_rowwise_pearson(bx, by), confidence)
        rx = sps.rankdata(bx, axis=1)
        ry = sps.rankdata(by, axis=1)
        s_ci = _percentile_interval(_rowwise_pearson(rx, ry), confidence)
    else:
        notes.append("every bootstrap resample had a constant variable; no interval")
    if 0 < n_valid < n_boot:
        notes.append(f"{n_boot - n_valid} of {n_boot} bootstrap resamples skipped "
                     "(a variable was constant)")
    return p_ci, s_ci, n_valid


def correlation(x: Any, y: Any, *, n_boot: int = 2000, seed: int = 0,
                confidence: float = 0.95, names: tuple[str, str] = ("x", "y")) -> Correlation:
    """Pearson r and Spearman rho of paired data, with p-values and bootstrap intervals.

    ``pearson_p`` and ``spearman_p`` are scipy's; ``spearman_p_exact`` is the exact permutation
    p-value for n <= ``EXACT_SPEARMAN_MAX_N`` (NaN above), see the module docstring.

    Args:
        x, y: equal-length 1-D sequences of numbers; ``None``, NaN and inf mark missing values
            and the pair is dropped (counted in ``dropped``).
        n_boot: bootstrap resamples (0 disables the intervals, which are then NaN).
        seed: seed of :func:`numpy.random.default_rng` for the resampling (same seed, same
            interval).
        confidence: coverage of the percentile intervals, in (0, 1).
        names: what to call x and y in ``note`` (e.g. the metric and the outcome).

    Returns:
        A :class:`Correlation`. Fewer than three finite pairs or a constant variable give NaN
        statistics with an explanatory ``note``; this function never raises on such data.
    """
    n_boot, seed, confidence = _check_options(n_boot, seed, confidence, names)
    xa, ya = _pair_arrays(x, y, names)
    finite = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[finite], ya[finite]
    n, dropped = int(xa.size), int((~finite).sum())
    dropped_note = (f"{dropped} pair(s) with a missing or non-finite value dropped"
                    if dropped else "")

    def undefined(reason: str) -> Correlation:
        note = "; ".join(s for s in (reason, dropped_note) if s)
        return _undefined(n, dropped, confidence, n_boot, seed, note)

    if n < 3:
        return undefined(f"only {n} finite pair(s); at least 3 are needed for a correlation")
    for name, arr in zip(names, (xa, ya), strict=True):
        if np.all(arr == arr[0]):
            return undefined(f"{name} is constant (every value is {arr[0]:.6g}); "
                             "correlation is undefined")

    notes: list[str] = []
    pr, sr = _scipy_tests(xa, ya, notes)
    pearson_r, pearson_p = float(pr.statistic), float(pr.pvalue)
    spearman_rho, spearman_p = float(sr.statistic), float(sr.pvalue)
    spearman_p_exact = _exact_spearman_p(xa, ya) if n <= EXACT_SPEARMAN_MAX_N else _NAN
    p_ci, s_ci, n_valid = _bootstrap_intervals(xa, ya, n_boot, seed, confidence, notes)
    if dropped_note:
        notes.append(dropped_note)

    return Correlation(
        n=n, dropped=dropped,
        pearson_r=pearson_r, pearson_p=pearson_p,
        pearson_ci_low=p_ci[0], pearson_ci_high=p_ci[1],
        spearman_rho=spearman_rho, spearman_p=spearman_p,
        spearman_ci_low=s_ci[0], spearman_ci_high=s_ci[1],
        spearman_p_exact=spearman_p_exact,
        confidence=confidence, n_boot=n_boot, n_boot_valid=n_valid, seed=seed,
        note="; ".join(notes),
    )


def _column(records: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    values = []
    for i, rec in enumerate(records):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise AdvTransferError(
                f"records[{i}][{key!r}] must be a number or None to be correlated, "
                f"got {type(v).__name__} {v!r}"
            )
        values.append(v)
    return values


def _check_keys(keys: Any, name: str) -> list[str]:
    if isinstance(keys, str) or not isinstance(keys, Sequence) or not all(
            isinstance(k, str) for k in keys):
        raise AdvTransferError(f"{name} must be a list of record keys (strings), got {keys!r}")
    return list(keys)


def _check_records(records: Any) -> None:
    if isinstance(records, Mapping) or not isinstance(records, Sequence) or not all(
            isinstance(r, Mapping) for r in records):
        raise AdvTransferError("records must be a list of dicts (one per source model)")


def correlation_table(records: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                      outcomes: Sequence[str], **kw: Any) -> list[dict[str, Any]]:
    """One row per (metric, outcome): ``{"metric", "outcome", **Correlation.to_dict()}``.

    Values are taken from each record by key; a missing key or ``None`` is a missing value and
    that pair is dropped. ``kw`` is passed to :func:`correlation` (``n_boot``, ``seed``,
    ``confidence``). Rows are in metric-major order.
    """
    _check_records(records)
    metrics = _check_keys(metrics, "metrics")
    outcomes = _check_keys(outcomes, "outcomes")
    rows: list[dict[str, Any]] = []
    for m in metrics:
        xs = _column(records, m)
        for o in outcomes:
            c = correlation(xs, _column(records, o), names=(m, o), **kw)
            rows.append({"metric": m, "outcome": o, **c.to_dict()})
    return rows


# ----------------------------------------------------------------------------------------------
# Mantel test: correlation between two square matrices over the pairs of their labels
# ----------------------------------------------------------------------------------------------

#: Largest number of tasks for which :func:`mantel` enumerates every permutation (8! = 40320).
MANTEL_EXACT_MAX_TASKS = 8


@dataclass(frozen=True)
class MantelResult:
    """A Mantel test of two n x n matrices over their ordered off-diagonal pairs (i, j), i != j.

    ``statistic`` is Spearman's rho (or Pearson's r) between a[i, j] and b[i, j] over the
    ``n_pairs`` pairs where both are finite; ``p`` its permutation p-value (see :func:`mantel`);
    ``exact`` whether every one of the n! task permutations was used (``n_permutations`` = n!),
    otherwise ``n_permutations`` random ones. NaN with a ``note`` when undefined.
    """

    method: str
    alternative: str
    statistic: float
    p: float
    n_tasks: int
    n_pairs: int
    n_permutations: int
    exact: bool
    seed: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN becomes ``None``."""
        return to_jsonable(asdict(self))


def _square(m: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise AdvTransferError(f"{name} must be a square matrix of numbers") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise AdvTransferError(f"{name} must be a square matrix; got shape {a.shape}")
    return a


def _masked_pearson(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x and y (shape (P, K)) over the entries where ``keep``;
    NaN where fewer than 3 entries are kept or either side is constant."""
    w = keep.astype(np.float64)
    k = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.where(keep, x, 0.0).sum(axis=1) / k
        my = np.where(keep, y, 0.0).sum(axis=1) / k
        dx = np.where(keep, x - mx[:, None], 0.0)
        dy = np.where(keep, y - my[:, None], 0.0)
        sxx, syy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
        r = (dx * dy).sum(axis=1) / np.sqrt(sxx * syy)
    scale_x = np.where(keep, np.abs(x), 0.0).max(axis=1)
    scale_y = np.where(keep, np.abs(y), 0.0).max(axis=1)
    degenerate = (k < 3) | (sxx <= 1e-24 * k * scale_x**2) | (syy <= 1e-24 * k * scale_y**2)
    return np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))


def _masked_ranks(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Average ranks of each row over its kept entries (others NaN)."""
    return sps.rankdata(np.where(keep, values, np.nan), axis=1, nan_policy="omit")


def _pair_statistic(a_off: np.ndarray, b_off: np.ndarray, method: str) -> np.ndarray:
    """The statistic between the fixed a_off (K,) and each row of b_off (P, K)."""
    x = np.broadcast_to(a_off, b_off.shape)
    keep = np.isfinite(x) & np.isfinite(b_off)
    if method == "spearman":
        x, b_off = _masked_ranks(x, keep), _masked_ranks(b_off, keep)
    return _masked_pearson(x, b_off, keep)


def mantel(a: Any, b: Any, *, method: str = "spearman", alternative: str = "two-sided",
           n_permutations: int = 9999, seed: int = 0) -> MantelResult:
    """Mantel permutation test of the association between two n x n matrices over task pairs.

    The statistic is the correlation (Spearman's rho, or Pearson's r) between a[i, j] and
    b[i, j] over the ordered pairs i != j where both are finite. Pairs that share a task are
    not independent, so the usual p-value of a correlation over n(n - 1) pairs is wrong; the
    Mantel test permutes the task *labels* instead: for a permutation pi of the n tasks,
    b_pi[i, j] = b[pi(i), pi(j)] (rows and columns together, a fixed), and

        p = #{pi : s(a, b_pi) at least as extreme as s(a, b)} / #{pi}

    over all n! permutations when n <= ``MANTEL_EXACT_MAX_TASKS`` (exact; the identity is one
    of them, so p >= 1/n!), else p = (count + 1) / (n_permutations + 1) over ``n_permutations``
    permutations drawn by :func:`numpy.random.default_rng` (``seed``). "At least as extreme":
    |s_pi| >= |s| for ``alternative="two-sided"``, s_pi >= s for ``"greater"`` (a positive
    association), s_pi <= s for ``"less"`` (with a 1e-9 tolerance for rounding ties).

    Args:
        a, b: square matrices of the same size (the diagonal is ignored; NaN marks a missing
            pair, left out of every correlation).
        method: ``"spearman"`` or ``"pearson"``.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.
        n_permutations: random permutations when n > ``MANTEL_EXACT_MAX_TASKS`` (>= 1).
        seed: seed of the random permutations (>= 0).

    Returns:
        A :class:`MantelResult`; with fewer than 3 tasks, fewer than 3 finite pairs or a
        constant matrix the statistic and p are NaN and ``note`` says why.
    """
    if method not in ("spearman", "pearson"):
        raise AdvTransferError(f"method must be 'spearman' or 'pearson'; got {method!r}")
    if alternative not in ("two-sided", "greater", "less"):
        raise AdvTransferError(f"alternative must be 'two-sided', 'greater' or 'less'; got "
                               f"{alternative!r}")
    if (isinstance(n_permutations, bool) or not isinstance(n_permutations, numbers.Integral)
            or n_permutations < 1):
        raise AdvTransferError(f"n_permutations must be an integer >= 1; got {n_permutations!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise AdvTransferError(f"seed must be a non-negative integer; got {seed!r}")
    am, bm = _square(a, "a"), _square(b, "b")
    if am.shape != bm.shape:
        raise AdvTransferError(f"a and b must have the same shape; got {am.shape} and "
                               f"{bm.shape}")
    n = am.shape[0]
    off = ~np.eye(n, dtype=bool)
    a_off = am[off]
    observed = float(_pair_statistic(a_off, bm[off][None, :], method)[0])
    n_pairs = int((np.isfinite(a_off) & np.isfinite(bm[off])).sum())
    exact = 3 <= n <= MANTEL_EXACT_MAX_TASKS
    n_perm = math.factorial(n) if exact else int(n_permutations)

    def result(statistic: float, p: float, note: str = "") -> MantelResult:
        return MantelResult(method=method, alternative=alternative, statistic=statistic, p=p,
                            n_tasks=n, n_pairs=n_pairs, n_permutations=n_perm, exact=exact,
                            seed=int(seed), note=note)

    if n < 3:
        return result(_NAN, _NAN, f"only {n} task(s); a Mantel test needs at least 3")
    if not math.isfinite(observed):
        return result(_NAN, _NAN, f"correlation undefined over the {n_pairs} finite pair(s) "
                                  "(fewer than 3, or a constant matrix)")
    if exact:
        perms = _all_permutations(n)
    else:
        rng = np.random.default_rng(int(seed))
        perms = np.argsort(rng.random((n_perm, n)), axis=1)
    count = 0
    for start in range(0, len(perms), 4096):
        chunk = perms[start:start + 4096]
        b_perm = bm[chunk[:, :, None], chunk[:, None, :]][:, off]
        null = _pair_statistic(a_off, b_perm, method)
        if alternative == "two-sided":
            hit = np.abs(null) >= abs(observed) - 1e-9
        elif alternative == "greater":
            hit = null >= observed - 1e-9
        else:
            hit = null <= observed + 1e-9
        count += int(hit.sum())  # NaN (a constant permuted sub-matrix) never counts
    p = count / n_perm if exact else (count + 1) / (n_perm + 1)
    return result(observed, float(p))


# ----------------------------------------------------------------------------------------------
# Correlation within groups set by design
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WithinCorrelation:
    """Pooled within-group Pearson correlation (partial correlation given the groups).

    ``r`` is r_w of the module docstring, ``p`` its within-group permutation p-value, ``p_t`` the
    t-test p-value with ``df = n - groups - 1``, ``[ci_low, ci_high]`` the stratified bootstrap
    interval. ``groups`` counts the groups with at least one finite pair; a pair whose group is
    missing is dropped like a pair with a missing value.
    """

    n: int
    dropped: int
    groups: int
    df: int
    r: float
    p: float
    p_t: float
    ci_low: float
    ci_high: float
    confidence: float
    n_boot: int
    n_boot_valid: int
    n_perm: int
    seed: int
    note: str = ""

    @property
    def defined(self) -> bool:
        return math.isfinite(self.r)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN becomes ``None``."""
        return to_jsonable(asdict(self))


def _group_codes(groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per entry (-1 where the group is missing: None or a non-finite number) and
    whether each entry has a group. Codes follow the order of first appearance."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence | np.ndarray):
        raise AdvTransferError(f"groups must be a sequence of group labels, got "
                               f"{type(groups).__name__}")
    codes: dict[Any, int] = {}
    out = np.full(len(groups), -1, dtype=np.intp)
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, numbers.Real) and not math.isfinite(float(g))):
            continue
        try:
            out[i] = codes.setdefault(g, len(codes))
        except TypeError as exc:
            raise AdvTransferError(f"groups[{i}] must be a hashable label (number or string), "
                                   f"got {type(g).__name__}") from exc
    return out, out >= 0


def _demean_rows(a: np.ndarray, slices: list[slice]) -> np.ndarray:
    """Subtract, in each row of ``a`` (shape (B, n)), the mean over each column slice."""
    out = a.copy()
    for s in slices:
        out[:, s] -= out[:, s].mean(axis=1, keepdims=True)
    return out


def _varies(a: np.ndarray, slices: list[slice]) -> np.ndarray:
    """Per row of ``a``: whether some column slice holds two different values."""
    return np.any([np.ptp(a[:, s], axis=1) > 0 for s in slices], axis=0)


def _within_r(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """r_w per row of group-demeaned rows (no re-centring: the rows already sum to zero)."""
    num = np.einsum("ij,ij->i", dx, dy)
    den = np.sqrt(np.einsum("ij,ij->i", dx, dx) * np.einsum("ij,ij->i", dy, dy))
    return np.clip(num / den, -1.0, 1.0)


def within_group_correlation(x: Any, y: Any, groups: Any, *, n_boot: int = 2000,
                             n_perm: int = 9999, seed: int = 0, confidence: float = 0.95,
                             names: tuple[str, str] = ("x", "y")) -> WithinCorrelation:
    """Correlation of x and y inside groups: r_w, permutation and t p-values, bootstrap interval.

    See the module docstring for the formulas. ``groups`` gives each pair's group (any hashable
    label; ``None`` or a non-finite number drops the pair). ``n_perm`` within-group permutations
    (0 disables ``p``) and ``n_boot`` stratified resamples (0 disables the interval) are drawn
    from one :func:`numpy.random.default_rng` seeded with ``seed``.

    Returns:
        A :class:`WithinCorrelation`; statistics that cannot be computed (``df < 1``, x or y
        constant inside every group) are NaN with a ``note``. Never raises on such data.
    """
    n_boot, seed, confidence = _check_options(n_boot, seed, confidence, names)
    n_perm = _nonneg_int(n_perm, "n_perm")
    xa, ya = _pair_arrays(x, y, names)
    codes, has_group = _group_codes(groups)
    if codes.shape != xa.shape:
        raise AdvTransferError(f"groups must have one label per pair ({xa.shape[0]}), got "
                               f"{codes.shape[0]}")
    keep = np.isfinite(xa) & np.isfinite(ya) & has_group
    order = np.argsort(codes[keep], kind="stable")  # pairs of one group side by side
    xa, ya, codes = xa[keep][order], ya[keep][order], codes[keep][order]
    n, dropped = int(xa.size), int((~keep).sum())
    _, starts, sizes = np.unique(codes, return_index=True, return_counts=True)
    slices = [slice(int(a), int(a + m)) for a, m in zip(starts, sizes, strict=True)]
    n_groups, df = len(slices), n - len(slices) - 1
    notes = [f"{dropped} pair(s) with a missing value or group dropped"] if dropped else []

    def result(r: float = _NAN, p: float = _NAN, p_t: float = _NAN,
               ci: tuple[float, float] = (_NAN, _NAN), n_valid: int = 0) -> WithinCorrelation:
        return WithinCorrelation(n=n, dropped=dropped, groups=n_groups, df=df, r=r, p=p, p_t=p_t,
                                 ci_low=ci[0], ci_high=ci[1], confidence=confidence,
                                 n_boot=n_boot, n_boot_valid=n_valid, n_perm=n_perm, seed=seed,
                                 note="; ".join(notes))

    if df < 1:
        notes.insert(0, f"{n} pair(s) in {n_groups} group(s): at least groups + 2 pairs are "
                        "needed for a within-group correlation")
        return result()
    dx, dy = _demean_rows(xa[None, :], slices), _demean_rows(ya[None, :], slices)
    for name, a in zip(names, (xa, ya), strict=True):
        if not _varies(a[None, :], slices)[0]:
            notes.insert(0, f"{name} is constant inside every group; within-group correlation "
                            "is undefined")
            return result()
    r = float(_within_r(dx, dy)[0])
    p_t = float(2.0 * sps.t.sf(abs(r) * math.sqrt(df / max(1.0 - r * r, 1e-300)), df))
    rng = np.random.default_rng(seed)
    p = _NAN
    if n_perm:
        perm = np.tile(np.arange(n), (n_perm, 1))
        for s in slices:
            perm[:, s] = rng.permuted(perm[:, s], axis=1)
        null = np.abs(_within_r(np.broadcast_to(dx[0], perm.shape), dy[0][perm]))
        # the tolerance counts permutations that tie the observed value despite rounding
        p = float((1 + np.sum(null >= abs(r) - 1e-12)) / (1 + n_perm))
    ci, n_valid = (_NAN, _NAN), 0
    if n_boot:
        idx = np.concatenate([rng.integers(s.start, s.stop, size=(n_boot, s.stop - s.start))
                              for s in slices], axis=1)
        bx, by = xa[idx], ya[idx]
        valid = _varies(bx, slices) & _varies(by, slices)
        n_valid = int(valid.sum())
        ci = _percentile_interval(_within_r(_demean_rows(bx[valid], slices),
                                            _demean_rows(by[valid], slices)), confidence)
        if n_valid < n_boot:
            notes.append(f"{n_boot - n_valid} of {n_boot} bootstrap resamples skipped (x or y "
                         "constant inside every group)")
    return result(r, p, p_t, ci, n_valid)


def within_group_table(records: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                       outcomes: Sequence[str], group: str, **kw: Any) -> list[dict[str, Any]]:
    """One row per (metric, outcome), metric-major: ``{"metric", "outcome", "group",
    **WithinCorrelation.to_dict()}`` with groups given by ``record[group]``; ``kw`` goes to
    :func:`within_group_correlation`."""
    _check_records(records)
    metrics = _check_keys(metrics, "metrics")
    outcomes = _check_keys(outcomes, "outcomes")
    labels = [rec.get(group) for rec in records]
    rows: list[dict[str, Any]] = []
    for m in metrics:
        xs = _column(records, m)
        for o in outcomes:
            w = within_group_correlation(xs, _column(records, o), labels, names=(m, o), **kw)
            rows.append({"metric": m, "outcome": o, "group": group, **w.to_dict()})
    return rows


def group_summary(records: Sequence[Mapping[str, Any]], group: str,
                  keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per distinct ``record[group]`` (sorted when all labels are numbers, else in order of first
    appearance): ``{"group": label, "n": records, "stats": {key: {"n", "mean", "sd"}}}``.
    ``sd`` is the sample standard deviation (ddof = 1; NaN below two values); missing values are
    skipped."""
    _check_records(records)
    keys = _check_keys(keys, "keys")
    labels = [rec.get(group) for rec in records]
    codes, _ = _group_codes(labels)
    members = [np.flatnonzero(codes == c) for c in range(int(codes.max(initial=-1)) + 1)]
    if all(isinstance(labels[m[0]], numbers.Real) for m in members):
        members.sort(key=lambda m: labels[m[0]])
    columns = {k: _as_float_array(_column(records, k), k) for k in keys}
    rows: list[dict[str, Any]] = []
    for m in members:
        row: dict[str, Any] = {"group": labels[m[0]], "n": int(m.size), "stats": {}}
        for k, col in columns.items():
            v = col[m]
            v = v[np.isfinite(v)]
            row["stats"][k] = {"n": int(v.size), "mean": float(v.mean()) if v.size else _NAN,
                      "sd": float(v.std(ddof=1)) if v.size > 1 else _NAN}
        rows.append(to_jsonable(row))
    return rows
