r"""An evaluation protocol for transferability rankings: several measures, intervals, baselines.

A single weighted Kendall tau against a single ground truth is not a stable basis for comparing
transferability methods: Andrea Agostinelli, Michal Pándy, Jasper Uijlings, Thomas Mensink,
Vittorio Ferrari. *How stable are Transferability Metrics evaluations?* ECCV 2022
(arXiv:2204.01403) show that small changes of the experimental setup reverse the conclusions.
This module reports, for a set of methods scored on several targets:

* several **measures** per target (:func:`get_measure`): weighted Kendall :math:`\tau_w`,
  Kendall :math:`\tau_b`, ``rel@k`` (:func:`rel_at_k`) and ``regret@k`` (:func:`regret_at_k`);
* a percentile **bootstrap interval** of the mean over targets (:func:`bootstrap_interval`),
  resampling candidates within each target and/or the targets;
* a **ceiling** (:func:`seed_agreement`): how well one fine-tuning seed's results rank the
  candidates against another seed's, the best agreement any method can expect;
* two **baselines** that never look at target images: the leave-one-target-out
  :func:`static_ranker` and a uniformly random ranking (:func:`random_baseline`);
* :func:`evaluate_methods`, which puts all of it in one table (:class:`ProtocolResult`).

Reference implementations. The correlation measures and the relative top-1 accuracy follow
google-research/google-research, ``stable_transfer/transferability/results_analysis/
results_analysis_utils.py`` (``get_correlation_scores``: ``scipy.stats.weightedtau`` and
``kendalltau`` with their defaults; ``relative_top_accuracy``: the accuracy of the top-scored
candidate, by ``np.argmax``, over the best accuracy). ``rel@k`` for ``k > 1`` follows
TencentARC/SFDA, ``rank_correlation.py`` (``rel_k``: the best accuracy among the ``k``
top-scored candidates over the best accuracy) of Wenqi Shao et al. *Not All Models Are Equal:
Predicting Model Transferability in a Self-challenging Fisher Space.* ECCV 2022
(arXiv:2207.03036). ``regret@k`` is the regret of Cedric Renggli et al. *Which Model to
Transfer? Finding the Needle in the Growing Haystack.* CVPR 2022 (arXiv:2010.06402) for the
search strategy "fine-tune the ``k`` top-scored candidates and keep the best".

Conventions shared by every function here:

* **Scores and truth** are matched by candidate name (``{target: {candidate: value}}``); every
  candidate of the truth must have a score and every score a truth (a clear
  :class:`~advtransfer.errors.AdvTransferError` names the method, target and candidate
  otherwise). Truth values must be finite. The candidate order of the truth mapping is the
  "input order" wherever an order matters.
* **Ties in scores.** :math:`\tau_w` and :math:`\tau_b` handle ties by their own definitions
  (both are invariant to the order of the candidates; see :func:`get_measure`). ``rel@k`` and
  ``regret@k`` need to know *which* ``k`` candidates are selected when the ``k``-th best score is
  tied; by default (``ties="average"``) they return the exact expectation over a uniformly random
  order of the tied candidates, so the result does not depend on the (arbitrary) order of the
  candidates and a method that scores every candidate alike gets exactly the expected value of a
  random pick. ``ties="first"`` breaks ties by input order instead, which is what the published
  code does (``np.argmax`` / Python's stable ``sorted``); that choice depends on the order of a
  dictionary, which is why it is not the default.
* **NaN scores** (a method that could not score a candidate). ``nan_policy="propagate"`` (the
  default) makes every measure ``nan`` on a target where a method left any candidate unscored,
  and the mean over targets ``nan`` too: the method's result is reported as undefined instead of
  being computed on a smaller, easier candidate set. Dropping the unscored candidates
  (``nan_policy="omit"``, available) would reward a method for abstaining on the candidates it
  would rank worst, and compare methods on different candidate sets; under ``"omit"`` the
  measure is computed on the scored candidates only (the best truth of ``rel@k`` and
  ``regret@k`` is then the best among them) and is ``nan`` if fewer than 2 remain (1 for
  ``rel@k`` / ``regret@k``). :func:`advtransfer.selection.evaluate_methods` instead ranks
  unscored candidates last; pass such scores with a value below every finite score to get that.
* **Undefined values.** The taus are ``nan`` when the scores or the truth are constant on a
  target (as in :mod:`advtransfer.estimators.ranking`); a mean over targets that includes a
  ``nan`` is ``nan`` (``ProtocolRow.cells[m].per_target`` shows which target).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.estimators._validate import _to_numpy, as_array
from advtransfer.estimators.ranking import _WEIGHTEDTAU, _statistic

try:  # the Cython kernel scipy.stats.weightedtau(rank=True) calls twice; 3x less overhead
    from scipy.stats._stats import _weightedrankedtau as _WRT
except ImportError:  # pragma: no cover - other scipy layouts: the public function
    _WRT = None

__all__ = [
    "DEFAULT_MEASURES",
    "BootstrapInterval",
    "Measure",
    "ProtocolResult",
    "ProtocolRow",
    "RandomBaseline",
    "bootstrap_interval",
    "evaluate_methods",
    "get_measure",
    "random_baseline",
    "regret_at_k",
    "rel_at_k",
    "seed_agreement",
    "static_ranker",
]

#: Measures reported by :func:`evaluate_methods` unless told otherwise.
DEFAULT_MEASURES: tuple[str, ...] = (
    "weighted_tau", "kendall_tau", "rel@1", "rel@3", "regret@1", "regret@3",
)
_OVER = ("candidates", "targets")
_NAN = math.nan

Ties = Literal["average", "first"]
NanPolicy = Literal["propagate", "omit"]


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AdvTransferTypeError(f"{name} must be an integer >= {minimum}; got "
                                   f"{type(value).__name__}")
    if int(value) < minimum:
        raise AdvTransferError(f"{name} must be an integer >= {minimum}; got {int(value)}")
    return int(value)


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not (
            0.0 < float(level) < 1.0):
        raise AdvTransferError(f"level must be a number strictly between 0 and 1; got {level!r}")
    return float(level)


def _check_seed(seed: Any) -> int:
    return _check_int(seed, "seed", 0)


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise AdvTransferError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def _check_over(over: Any) -> tuple[str, ...]:
    items = (over,) if isinstance(over, str) else over
    try:
        items = tuple(items)
    except TypeError:
        raise AdvTransferTypeError(f"over must be 'candidates', 'targets' or a sequence of them; "
                                   f"got {type(over).__name__}") from None
    bad = [x for x in items if x not in _OVER]
    if bad or not items:
        raise AdvTransferError(f"over must be a non-empty subset of {list(_OVER)}; got {over!r}")
    return tuple(x for x in _OVER if x in items)


def _score_vector(x: Any, name: str = "scores") -> np.ndarray:
    """1-D float64 scores; NaN allowed (unscored candidate), infinities refused."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise AdvTransferError(f"{name} must be a 1-D array (n_candidates,); got shape "
                               f"{tuple(arr.shape)}")
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AdvTransferTypeError(f"{name} must hold numbers; got dtype {arr.dtype}") from exc
    if np.any(np.isinf(arr)):
        raise AdvTransferError(f"{name} must be finite or NaN (unscored); found an infinite "
                               "entry")
    return arr


def _pair(scores: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _score_vector(scores)
    t = as_array(truth, "truth", ndim=1, shape_hint="(n_candidates,)")
    if s.shape[0] != t.shape[0]:
        raise AdvTransferError(f"scores and truth must have the same number of candidates; got "
                               f"{s.shape[0]} and {t.shape[0]}")
    if s.shape[0] < 2:
        raise AdvTransferError(f"scores and truth must describe at least 2 candidates; got "
                               f"{s.shape[0]}")
    return s, t


def _apply_nan_policy(s: np.ndarray, t: np.ndarray, nan_policy: str
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    bad = np.isnan(s)
    if not bad.any():
        return s, t
    if nan_policy == "propagate":
        return None
    keep = ~bad
    return s[keep], t[keep]


# ---------------------------------------------------------------------------------------------
# measures on float arrays (validated by the callers)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, 1)
    return i, j


def _tau_b(s: np.ndarray, t: np.ndarray) -> float:
    n = s.shape[0]
    if n < 2:
        return _NAN
    i, j = _upper_pairs(n)
    ds = np.sign(s[i] - s[j])
    dt = np.sign(t[i] - t[j])
    n_s = int(np.count_nonzero(ds))  # pairs not tied in scores = P + Q + T_t
    n_t = int(np.count_nonzero(dt))  # pairs not tied in truth = P + Q + T_s
    if n_s == 0 or n_t == 0:
        return _NAN
    return float(np.dot(ds, dt) / math.sqrt(n_s * n_t))


def _tau_w(s: np.ndarray, t: np.ndarray) -> float:
    if s.shape[0] < 2 or np.ptp(s) == 0 or np.ptp(t) == 0:
        return _NAN
    s = np.ascontiguousarray(s, dtype=np.float64)
    t = np.ascontiguousarray(t, dtype=np.float64)
    if _WRT is not None:
        return float((_WRT(s, t, None, None, True) + _WRT(t, s, None, None, True)) / 2)
    return _statistic(_WEIGHTEDTAU(s, t))  # pragma: no cover


def _best_of_top_k(s: np.ndarray, t: np.ndarray, k: int, ties: str) -> float:
    """max of ``t`` over the ``k`` top-scored candidates (expected value over tie orders)."""
    n = s.shape[0]
    k = min(k, n)
    if ties == "first":
        order = np.argsort(-s, kind="stable")
        return float(t[order[:k]].max())
    kth = np.sort(s)[::-1][k - 1]
    above = s > kth
    tied = s == kth
    n_above = int(np.count_nonzero(above))
    j = k - n_above  # slots left for the g tied candidates, 1 <= j <= g
    g = int(np.count_nonzero(tied))
    a = float(t[above].max()) if n_above else -math.inf
    vals = np.sort(t[tied])[::-1]
    if j == g:
        return max(a, float(vals[0]))
    # the i-th largest tied truth (i = 1..g) is the best of a uniformly random j-subset with
    # probability C(g - i, j - 1) / C(g, j)
    total = math.comb(g, j)
    return float(sum(math.comb(g - i, j - 1) / total * max(a, float(vals[i - 1]))
                     for i in range(1, g - j + 2)))


def _rel(s: np.ndarray, t: np.ndarray, k: int, ties: str) -> float:
    if s.shape[0] < 1:
        return _NAN
    best = float(t.max())
    if best <= 0:
        return _NAN
    return _best_of_top_k(s, t, k, ties) / best


def _regret(s: np.ndarray, t: np.ndarray, k: int, ties: str) -> float:
    if s.shape[0] < 1:
        return _NAN
    return float(t.max()) - _best_of_top_k(s, t, k, ties)


# ---------------------------------------------------------------------------------------------
# public measures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """A named measure of agreement between ``scores`` and ``truth`` on one target.

    Calling it validates its inputs (``scores`` may hold NaN, see the module docstring) and
    returns a float. ``raw`` is the same function on already validated float64 arrays, used by
    the bootstrap. ``higher_is_better`` is False for ``regret@k``. ``positive_truth`` marks
    measures (``rel@k``) that need a positive best truth on every target.
    """

    name: str
    raw: Callable[[np.ndarray, np.ndarray], float] = field(repr=False)
    higher_is_better: bool = True
    positive_truth: bool = False

    def __call__(self, scores: Any, truth: Any) -> float:
        s, t = _pair(scores, truth)
        if self.positive_truth and float(t.max()) <= 0:
            raise AdvTransferError(f"truth must have a positive maximum for {self.name}; got max "
                                   f"{float(t.max()):.6g}")
        return float(self.raw(s, t))


def _with_nan_policy(fn: Callable[[np.ndarray, np.ndarray], float], nan_policy: str
                     ) -> Callable[[np.ndarray, np.ndarray], float]:
    def raw(s: np.ndarray, t: np.ndarray) -> float:
        kept = _apply_nan_policy(s, t, nan_policy)
        return _NAN if kept is None else fn(*kept)

    return raw


def get_measure(name: str, *, ties: Ties = "average",
                nan_policy: NanPolicy = "propagate") -> Measure:
    r"""The measure called ``name``: ``"weighted_tau"``, ``"kendall_tau"``, ``"rel@k"`` or
    ``"regret@k"`` (any integer ``k >= 1``, e.g. ``"rel@1"``, ``"regret@3"``).

    * ``"weighted_tau"``: :func:`advtransfer.estimators.weighted_kendall_tau`, i.e.
      ``scipy.stats.weightedtau(scores, truth)`` with scipy's defaults ``rank=True``,
      ``weigher=None`` (hyperbolic, :math:`1/(r+1)`), ``additive=True``: the average of Vigna's
      :math:`\tau_w` with the ranks :math:`r` taken by decreasing ``(scores, truth)`` and by
      decreasing ``(truth, scores)`` (rank 0 = highest), a pair weighing
      :math:`1/(r_i+1) + 1/(r_j+1)`. Symmetric in its arguments and independent of the order of
      the candidates, ties included. ``nan`` if the scores or the truth are constant.
    * ``"kendall_tau"``: Kendall :math:`\tau_b` (as ``scipy.stats.kendalltau``):

      .. math::

          \tau_b = \frac{\sum_{i<j} \operatorname{sgn}(s_i - s_j)\operatorname{sgn}(t_i - t_j)}
              {\sqrt{\#\{i<j : s_i \ne s_j\}\;\#\{i<j : t_i \ne t_j\}}};

      computed here in :math:`O(M^2)` with numpy (equal to scipy's value, much faster for the
      bootstrap). ``nan`` if the scores or the truth are constant.
    * ``"rel@k"``: :func:`rel_at_k`; ``"regret@k"``: :func:`regret_at_k` (lower is better).

    Parameters
    ----------
    name:
        The measure's name (see above).
    ties:
        ``"average"`` (default) or ``"first"``: tie handling of ``rel@k`` and ``regret@k`` (see
        :func:`rel_at_k`); ignored by the taus, which have their own.
    nan_policy:
        ``"propagate"`` (default) or ``"omit"``: what a NaN score does (module docstring).
    """
    _check_choice(ties, "ties", ("average", "first"))
    _check_choice(nan_policy, "nan_policy", ("propagate", "omit"))
    if not isinstance(name, str):
        raise AdvTransferTypeError(f"measure name must be a string; got {type(name).__name__}")
    if name == "weighted_tau":
        return Measure(name, _with_nan_policy(_tau_w, nan_policy))
    if name == "kendall_tau":
        return Measure(name, _with_nan_policy(_tau_b, nan_policy))
    for prefix, fn, higher, positive in (("rel@", _rel, True, True),
                                         ("regret@", _regret, False, False)):
        if name.startswith(prefix) and name[len(prefix):].isdigit() and int(name[len(prefix):]):
            k = int(name[len(prefix):])
            base = functools.partial(fn, k=k, ties=ties)
            return Measure(name, _with_nan_policy(base, nan_policy), higher, positive)
    raise AdvTransferError(f"measure must be 'weighted_tau', 'kendall_tau', 'rel@<k>' or "
                           f"'regret@<k>' with an integer k >= 1; got {name!r}")


def _as_measure(measure: Any) -> Measure:
    if isinstance(measure, Measure):
        return measure
    if isinstance(measure, str):
        return get_measure(measure)
    if callable(measure):
        name = getattr(measure, "__name__", None) or type(measure).__name__
        return Measure(str(name), lambda s, t: float(measure(s, t)))
    raise AdvTransferTypeError(f"measure must be a measure name, a Measure or a callable "
                               f"(scores, truth) -> float; got {type(measure).__name__}")


def rel_at_k(scores: Any, truth: Any, k: int = 1, *, ties: Ties = "average",
             nan_policy: NanPolicy = "propagate") -> float:
    r"""``rel@k``: best truth among the ``k`` top-scored candidates over the best truth overall.

    .. math::

        \operatorname{rel@}k = \frac{\max_{m \in \operatorname{top}_k(s)} t_m}{\max_m t_m}
        \in (0, 1]

    (Agostinelli et al., ECCV 2022, "relative top-1 accuracy", for ``k = 1``; SFDA's ``rel_k``
    for any ``k``). 1 when the best candidate is among the ``k`` the method would fine-tune. A
    ``k`` larger than the number of candidates :math:`M` means all of them (``rel = 1``).

    The published code breaks ties in the scores by input order (``np.argmax``, Python's stable
    ``sorted``); :func:`advtransfer.estimators.top_k_relative_accuracy` does the same. Here
    ``ties="average"`` (default) returns the exact expectation over a uniformly random order of
    the candidates tied at the ``k``-th best score: with :math:`A` the candidates scored strictly
    above it, :math:`g` tied candidates with truths :math:`v_1 \ge \dots \ge v_g` and
    :math:`j = k - |A|` places left,

    .. math::

        \mathbb E\,\max_{m \in \operatorname{top}_k} t_m = \sum_{i=1}^{g}
            \frac{\binom{g-i}{j-1}}{\binom{g}{j}} \max\!\big(\max_{m \in A} t_m,\, v_i\big),

    which depends neither on the order of the candidates nor on how ties were broken; with all
    scores equal it is the expected ``rel@k`` of a random ranking. ``ties="first"`` follows the
    published code (the earlier candidate wins).

    Parameters
    ----------
    scores:
        ``(M,)`` scores, higher = predicted better; NaN = not scored (see ``nan_policy``).
    truth:
        ``(M,)`` finite ground truth (e.g. fine-tuned accuracy) with a positive maximum.
    k:
        Number of top-scored candidates, an integer ``>= 1``.
    ties:
        ``"average"`` (default) or ``"first"``.
    nan_policy:
        ``"propagate"`` (default: ``nan`` if any score is NaN) or ``"omit"`` (drop unscored
        candidates, the best truth then being the best scored one).
    """
    _check_int(k, "k", 1)
    return get_measure(f"rel@{int(k)}", ties=ties, nan_policy=nan_policy)(scores, truth)


def regret_at_k(scores: Any, truth: Any, k: int = 1, *, ties: Ties = "average",
                nan_policy: NanPolicy = "propagate") -> float:
    r"""``regret@k``: best truth minus the best truth among the ``k`` top-scored candidates.

    .. math::

        \operatorname{regret@}k = \max_m t_m - \max_{m \in \operatorname{top}_k(s)} t_m \ge 0

    in the units of ``truth`` (e.g. accuracy points); 0 is perfect, *lower is better*. It is the
    regret of Renggli et al. (CVPR 2022) for the strategy "fine-tune the ``k`` top-scored
    candidates, keep the best". Unlike ``rel@k`` it needs no positive truth. Ties and NaN scores
    as in :func:`rel_at_k` (``ties="average"``: the expected regret over the orders of the tied
    candidates).

    Parameters
    ----------
    scores, truth, k, ties, nan_policy:
        As in :func:`rel_at_k` (``truth`` may be any finite values).
    """
    _check_int(k, "k", 1)
    return get_measure(f"regret@{int(k)}", ties=ties, nan_policy=nan_policy)(scores, truth)


# ---------------------------------------------------------------------------------------------
# tables keyed by target and candidate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    targets: tuple[Hashable, ...]
    names: tuple[tuple[Hashable, ...], ...]
    truth: tuple[np.ndarray, ...]


def _number(value: Any, where: str) -> float:
    if value is None:
        return _NAN
    if isinstance(value, bool):
        raise AdvTransferTypeError(f"{where} must be a number; got bool")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AdvTransferTypeError(f"{where} must be a number; got {type(value).__name__}"
                                   ) from None


def _truth_table(truth: Any, name: str = "truth") -> _Table:
    if not isinstance(truth, Mapping):
        raise AdvTransferTypeError(f"{name} must be a mapping target -> {{candidate: value}}; "
                                   f"got {type(truth).__name__}")
    if not truth:
        raise AdvTransferError(f"{name} must name at least one target; got an empty mapping")
    targets, names, values = [], [], []
    for target, per in truth.items():
        if not isinstance(per, Mapping):
            raise AdvTransferTypeError(f"{name}[{target!r}] must be a mapping candidate -> "
                                       f"value; got {type(per).__name__}")
        if len(per) < 2:
            raise AdvTransferError(f"{name}[{target!r}] must describe at least 2 candidates; got "
                                   f"{len(per)}")
        t = np.array([_number(v, f"{name}[{target!r}][{c!r}]") for c, v in per.items()])
        bad = [c for c, v in zip(per, t, strict=True) if not math.isfinite(v)]
        if bad:
            raise AdvTransferError(f"{name}[{target!r}][{bad[0]!r}] must be finite; got "
                                   f"{per[bad[0]]!r}")
        targets.append(target)
        names.append(tuple(per))
        values.append(t)
    return _Table(tuple(targets), tuple(names), tuple(values))


def _score_table(scores: Any, table: _Table, what: str = "scores") -> tuple[np.ndarray, ...]:
    """Scores aligned with ``table`` by target and candidate name (NaN / None = unscored)."""
    if not isinstance(scores, Mapping):
        raise AdvTransferTypeError(f"{what} must be a mapping target -> {{candidate: score}}; "
                                   f"got {type(scores).__name__}")
    extra = [t for t in scores if t not in set(table.targets)]
    if extra:
        raise AdvTransferError(f"{what} has target {extra[0]!r}, which has no ground truth")
    out = []
    for target, names in zip(table.targets, table.names, strict=True):
        if target not in scores:
            raise AdvTransferError(f"{what} has no scores for target {target!r}")
        per = scores[target]
        if not isinstance(per, Mapping):
            raise AdvTransferTypeError(f"{what}[{target!r}] must be a mapping candidate -> "
                                       f"score; got {type(per).__name__}")
        for cand in names:
            if cand not in per:
                raise AdvTransferError(f"{what}: target {target!r}: no score for candidate "
                                       f"{cand!r}")
        known = set(names)
        for cand in per:
            if cand not in known:
                raise AdvTransferError(f"{what}: target {target!r}: candidate {cand!r} has a "
                                       "score but no ground truth")
        s = np.array([_number(per[c], f"{what}[{target!r}][{c!r}]") for c in names])
        if np.any(np.isinf(s)):
            raise AdvTransferError(f"{what}: target {target!r}: scores must be finite or NaN "
                                   "(unscored); found an infinite score")
        out.append(s)
    return tuple(out)


def _check_positive_truth(measure: Measure, table: _Table) -> None:
    if measure.positive_truth:
        for target, t in zip(table.targets, table.truth, strict=True):
            if float(t.max()) <= 0:
                raise AdvTransferError(f"truth[{target!r}] must have a positive maximum for "
                                       f"{measure.name}; got max {float(t.max()):.6g}")


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapInterval:
    """Mean over targets of a measure, with a percentile bootstrap interval.

    Attributes
    ----------
    estimate:
        Mean over targets of the measure on the original data (``nan`` if it is ``nan`` on any
        target).
    low, high:
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the bootstrap replicates
        (``nan`` when ``estimate`` is ``nan`` or no replicate is defined).
    sd:
        Standard deviation of the replicates (the bootstrap standard error of ``estimate``).
    n_boot:
        Number of replicates drawn.
    n_valid:
        Number of replicates used (those where the measure was defined on at least one drawn
        target; see :func:`bootstrap_interval`).
    level:
        Confidence level.
    over:
        What was resampled: ``("candidates",)``, ``("targets",)`` or both.
    per_target:
        ``{target: measure on the original data}``.
    """

    estimate: float
    low: float
    high: float
    sd: float
    n_boot: int
    n_valid: int
    level: float
    over: tuple[str, ...]
    per_target: dict[Any, float] = field(default_factory=dict)


def _plan(sizes: Sequence[int], n_boot: int, seed: int, over: tuple[str, ...]
          ) -> list[list[tuple[int, np.ndarray | None]]]:
    """The resamples: per replicate, the drawn targets and their drawn candidate indices."""
    rng = np.random.default_rng(seed)
    n_t = len(sizes)
    plan = []
    for _ in range(n_boot):
        drawn = rng.integers(0, n_t, size=n_t) if "targets" in over else range(n_t)
        rep = []
        for ti in drawn:
            ti = int(ti)
            idx = (rng.integers(0, sizes[ti], size=sizes[ti]) if "candidates" in over
                   else None)
            rep.append((ti, idx))
        plan.append(rep)
    return plan


def _mean_or_nan(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()) if arr.size and not np.isnan(arr).any() else _NAN


def _run_bootstrap(per_target: Callable[[int, np.ndarray], float], original: Sequence[float],
                   plan: list[list[tuple[int, np.ndarray | None]]], level: float,
                   over: tuple[str, ...], targets: Sequence[Any]) -> BootstrapInterval:
    estimate = _mean_or_nan(original)
    n_boot = len(plan)
    per = dict(zip(targets, (float(v) for v in original), strict=True))
    if math.isnan(estimate):
        return BootstrapInterval(_NAN, _NAN, _NAN, _NAN, n_boot, 0, level, over, per)
    reps = np.full(n_boot, _NAN)
    for b, rep in enumerate(plan):
        vals = [original[ti] if idx is None else per_target(ti, idx) for ti, idx in rep]
        finite = [v for v in vals if not math.isnan(v)]
        if finite:
            reps[b] = float(np.mean(finite))
    valid = reps[~np.isnan(reps)]
    if valid.size == 0:
        return BootstrapInterval(estimate, _NAN, _NAN, _NAN, n_boot, 0, level, over, per)
    low, high = np.quantile(valid, [(1 - level) / 2, (1 + level) / 2])
    sd = float(valid.std(ddof=1)) if valid.size > 1 else 0.0
    return BootstrapInterval(estimate, float(low), float(high), sd, n_boot, int(valid.size),
                             level, over, per)


def _method_interval(measure: Measure, s_list: Sequence[np.ndarray], table: _Table,
                     plan: list[list[tuple[int, np.ndarray | None]]], level: float,
                     over: tuple[str, ...]) -> BootstrapInterval:
    raw = measure.raw
    original = [float(raw(s, t)) for s, t in zip(s_list, table.truth, strict=True)]

    def per_target(ti: int, idx: np.ndarray) -> float:
        return float(raw(s_list[ti][idx], table.truth[ti][idx]))

    return _run_bootstrap(per_target, original, plan, level, over, table.targets)


def bootstrap_interval(
    scores_by_target: Mapping[Any, Mapping[Any, float]],
    truth_by_target: Mapping[Any, Mapping[Any, float]],
    measure: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    over: str | Sequence[str] = ("candidates", "targets"),
) -> BootstrapInterval:
    r"""Mean over targets of ``measure`` with a percentile bootstrap interval.

    The estimate is :math:`\bar\mu = \frac1T \sum_{\tau} \mu(s_\tau, t_\tau)` on the original
    data. Each of the ``n_boot`` replicates (numpy ``Generator`` seeded with ``seed``) draws,
    when ``"targets"`` is in ``over``, :math:`T` targets with replacement, and, when
    ``"candidates"`` is in ``over``, for every drawn target its :math:`M_\tau` candidates with
    replacement (scores and truth together); the replicate is the mean of the measure over the
    drawn targets. The interval is the percentile interval
    :math:`[q_{(1-c)/2}, q_{(1+c)/2}]` of the replicates for ``level`` :math:`c` (Efron &
    Tibshirani); it need not contain the estimate, and with few candidates or targets it is
    rough. Resampling targets measures how much the conclusion depends on which targets were
    chosen; resampling candidates, on which candidates were in the pool.

    **Ties created by resampling.** Drawing candidates with replacement duplicates some of them:
    a duplicate is tied with its copy in *both* scores and truth. Such a pair counts as neither
    concordant nor discordant and is left out of both normalisations of :math:`\tau_b` and of
    scipy's :math:`\tau_w` (so duplicates do not inflate agreement); for ``rel@k`` /
    ``regret@k`` a duplicate and its copy have the same truth, so how their tie is broken does
    not matter, and ties between distinct candidates follow the measure's ``ties`` rule. A
    replicate may leave a target with constant scores or truth (e.g. one candidate drawn
    :math:`M` times), where a tau is undefined: such a target is left out of that replicate's
    mean, a replicate with no defined target is dropped, and ``n_valid`` counts the replicates
    used. When the estimate itself is ``nan`` (the measure is undefined on some target of the
    original data, e.g. a NaN score under ``nan_policy="propagate"``) no interval is computed.

    Parameters
    ----------
    scores_by_target:
        ``{target: {candidate: score}}``; higher = predicted better; NaN or ``None`` = not
        scored. Must name exactly the candidates of ``truth_by_target`` on every target.
    truth_by_target:
        ``{target: {candidate: ground truth}}``, finite, at least 2 candidates per target.
    measure:
        A measure name (:func:`get_measure`), a :class:`Measure`, or a callable
        ``(scores, truth) -> float`` on float64 arrays (it receives NaN scores as they are).
    n_boot:
        Number of bootstrap replicates, an integer ``>= 1``.
    level:
        Confidence level, strictly between 0 and 1.
    seed:
        Seed of the numpy ``Generator``, an integer ``>= 0``; the same seed gives the same
        interval, and :func:`evaluate_methods` uses the same resamples for every method.
    over:
        ``"candidates"``, ``"targets"`` or both (default).
    """
    m = _as_measure(measure)
    n_boot = _check_int(n_boot, "n_boot", 1)
    level = _check_level(level)
    seed = _check_seed(seed)
    over_t = _check_over(over)
    table = _truth_table(truth_by_target, "truth_by_target")
    _check_positive_truth(m, table)
    s_list = _score_table(scores_by_target, table, "scores_by_target")
    plan = _plan([len(n) for n in table.names], n_boot, seed, over_t)
    return _method_interval(m, s_list, table, plan, level, over_t)


# ---------------------------------------------------------------------------------------------
# ceiling: agreement between fine-tuning seeds
# ---------------------------------------------------------------------------------------------


def _runs_table(truth_runs: Any) -> tuple[_Table, tuple[np.ndarray, ...]]:
    """``{target: {candidate: [run values]}}`` -> table of run means and ``(M, R)`` arrays."""
    if not isinstance(truth_runs, Mapping) or not truth_runs:
        raise AdvTransferError("truth_runs must be a non-empty mapping target -> {candidate: "
                               f"[result of each fine-tuning seed]}}; got {truth_runs!r:.80}")
    targets, names, means, runs = [], [], [], []
    for target, per in truth_runs.items():
        if not isinstance(per, Mapping) or len(per) < 2:
            raise AdvTransferError(f"truth_runs[{target!r}] must be a mapping of at least 2 "
                                   "candidates -> [result of each fine-tuning seed]")
        rows = []
        for cand, values in per.items():
            where = f"truth_runs[{target!r}][{cand!r}]"
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise AdvTransferTypeError(f"{where} must be a sequence of results, one per "
                                           f"fine-tuning seed; got {type(values).__name__}")
            row = [_number(v, where) for v in values]
            if len(row) < 2:
                raise AdvTransferError(f"{where} must hold at least 2 runs (fine-tuning seeds); "
                                       f"got {len(row)}")
            if not all(math.isfinite(v) for v in row):
                raise AdvTransferError(f"{where} must hold finite values; got {row}")
            if rows and len(row) != len(rows[0]):
                raise AdvTransferError(f"{where} has {len(row)} runs but other candidates of "
                                       f"target {target!r} have {len(rows[0])}; the runs are "
                                       "matched by position (seed)")
            rows.append(row)
        arr = np.asarray(rows, dtype=np.float64)
        targets.append(target)
        names.append(tuple(per))
        means.append(arr.mean(axis=1))
        runs.append(arr)
    return _Table(tuple(targets), tuple(names), tuple(means)), tuple(runs)


def _pairwise(raw: Callable[[np.ndarray, np.ndarray], float], runs: np.ndarray) -> float:
    n_runs = runs.shape[1]
    vals = [float(raw(runs[:, a], runs[:, b]))
            for a, b in itertools.permutations(range(n_runs), 2)]
    return _mean_or_nan(vals)


def _ceiling_interval(measure: Measure, table: _Table, runs: Sequence[np.ndarray],
                      plan: list[list[tuple[int, np.ndarray | None]]], level: float,
                      over: tuple[str, ...]) -> BootstrapInterval:
    raw = measure.raw
    original = [_pairwise(raw, r) for r in runs]

    def per_target(ti: int, idx: np.ndarray) -> float:
        return _pairwise(raw, runs[ti][idx])

    return _run_bootstrap(per_target, original, plan, level, over, table.targets)


def seed_agreement(truth_runs_by_target: Mapping[Any, Mapping[Any, Sequence[float]]],
                   measure: Any) -> float:
    r"""Ceiling: how well one fine-tuning seed's results rank the candidates against another's.

    .. math::

        \frac1T \sum_\tau \frac{1}{R(R-1)} \sum_{a \ne b} \mu\big(t_\tau^{(a)}, t_\tau^{(b)}\big)

    over the :math:`R` runs (fine-tuning seeds) of every target, taking run :math:`a` as the
    "scores" and run :math:`b` as the truth, over *ordered* pairs (``rel@k`` and ``regret@k``
    are not symmetric; the taus are, so for them this is the mean over unordered pairs). Even
    a method that predicted the fine-tuning outcome perfectly up to seed noise would agree with
    one seed's results only this well, so it bounds what the methods can be expected to reach
    and is reported beside them. Methods are usually evaluated against the *mean* over seeds,
    which is less noisy than one seed: the ceiling is then a conservative (low) bound.

    Parameters
    ----------
    truth_runs_by_target:
        ``{target: {candidate: [result of seed 0, result of seed 1, ...]}}``: finite results,
        at least 2 runs, the same number for every candidate of a target (runs are matched by
        position), at least 2 candidates per target.
    measure:
        A measure name, :class:`Measure` or callable ``(scores, truth) -> float``.

    Returns
    -------
    float
        The mean over targets and ordered seed pairs; ``nan`` if the measure is undefined for
        some pair (e.g. a tau when one run gives every candidate the same result).
    """
    m = _as_measure(measure)
    table, runs = _runs_table(truth_runs_by_target)
    if m.positive_truth:
        for target, r in zip(table.targets, runs, strict=True):
            if float(r.max(axis=0).min()) <= 0:
                raise AdvTransferError(f"truth_runs[{target!r}] must have a positive maximum in "
                                       f"every run for {m.name}")
    return _mean_or_nan([_pairwise(m.raw, r) for r in runs])


# ---------------------------------------------------------------------------------------------
# baselines that never look at the target images
# ---------------------------------------------------------------------------------------------


def _ranks_desc(t: np.ndarray) -> np.ndarray:
    """Rank 1 = highest value; tied values share their average rank."""
    order = np.argsort(-t, kind="stable")
    ranks = np.empty(t.shape[0], dtype=np.float64)
    ranks[order] = np.arange(1, t.shape[0] + 1, dtype=np.float64)
    for v in np.unique(t):
        tie = t == v
        if np.count_nonzero(tie) > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def static_ranker(truth_by_target: Mapping[Any, Mapping[Any, float]]
                  ) -> dict[Any, dict[Any, float]]:
    r"""Leave-one-target-out static ranking: how good a candidate is on the *other* targets.

    For target :math:`\tau` and candidate :math:`m`,

    .. math::

        \operatorname{score}_\tau(m) = -\frac{1}{T-1} \sum_{\tau' \ne \tau} r_{\tau'}(m)

    with :math:`r_{\tau'}(m)` the rank of :math:`m` by decreasing truth on target :math:`\tau'`
    (1 = best; tied truths share their average rank). It is a method that knows which
    candidates are generally good but never looks at the target's data (cf. the task-agnostic
    strategies of Renggli et al., CVPR 2022); a transferability method that does not beat it
    adds nothing target-specific. Leaving the target out keeps its own truth from leaking into
    its scores.

    Parameters
    ----------
    truth_by_target:
        ``{target: {candidate: ground truth}}`` with at least 2 targets and the same candidates
        on every target (mean ranks over different candidate pools would not be comparable).

    Returns
    -------
    dict
        ``{target: {candidate: score}}`` (higher = predicted better), candidates in the order of
        ``truth_by_target``.
    """
    table = _truth_table(truth_by_target, "truth_by_target")
    if len(table.targets) < 2:
        raise AdvTransferError(f"static_ranker needs truth for at least 2 targets (each target "
                               f"is scored by the candidates' ranks on the other targets); got "
                               f"{len(table.targets)}")
    ref = table.names[0]
    ref_set = set(ref)
    for target, names in zip(table.targets[1:], table.names[1:], strict=True):
        if set(names) != ref_set:
            missing = [c for c in ref if c not in set(names)]
            extra = [c for c in names if c not in ref_set]
            raise AdvTransferError(
                f"static_ranker needs the same candidates on every target; target {target!r} "
                f"lacks {missing} and has {extra} compared with target {table.targets[0]!r}")
    pos = {c: i for i, c in enumerate(ref)}
    ranks = np.stack([_ranks_desc(t)[[names.index(c) for c in ref]]
                      for t, names in zip(table.truth, table.names, strict=True)])
    total = ranks.sum(axis=0)
    n_t = len(table.targets)
    out: dict[Any, dict[Any, float]] = {}
    for ti, (target, names) in enumerate(zip(table.targets, table.names, strict=True)):
        mean_other = (total - ranks[ti]) / (n_t - 1)
        out[target] = {c: -float(mean_other[pos[c]]) for c in names}
    return out


@dataclass(frozen=True)
class RandomBaseline:
    """The measure of a uniformly random ranking, averaged over targets, over ``n_draws`` draws.

    Attributes
    ----------
    mean:
        Mean over draws (estimates the expected value; ``estimate`` is an alias).
    sd:
        Standard deviation over draws (ddof 1) of the mean-over-targets measure: the spread of
        a random ranker's result, *not* the uncertainty of ``mean`` (that is ``sem``).
    sem:
        ``sd / sqrt(n_draws)``, the Monte Carlo standard error of ``mean``.
    low, high:
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the draws: the range a
        random ranker's result falls in.
    n_draws:
        Number of random rankings drawn.
    level:
        The level of ``low`` / ``high``.
    """

    mean: float
    sd: float
    sem: float
    low: float
    high: float
    n_draws: int
    level: float

    @property
    def estimate(self) -> float:
        """Alias of :attr:`mean` (the column of :meth:`ProtocolResult.to_rows`)."""
        return self.mean


def _random_draws(measure: Measure, table: _Table, n_draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n_draws)
    for d in range(n_draws):
        vals = [float(measure.raw(rng.permutation(t.shape[0]).astype(np.float64), t))
                for t in table.truth]
        out[d] = _mean_or_nan(vals)
    return out


def _summarize_draws(draws: np.ndarray, level: float) -> RandomBaseline:
    n = draws.shape[0]
    if np.isnan(draws).any():
        return RandomBaseline(_NAN, _NAN, _NAN, _NAN, _NAN, n, level)
    sd = float(draws.std(ddof=1)) if n > 1 else _NAN
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return RandomBaseline(float(draws.mean()), sd, sd / math.sqrt(n) if n > 1 else _NAN,
                          float(low), float(high), n, level)


def random_baseline(measure: Any, truth_by_target: Mapping[Any, Mapping[Any, float]], *,
                    n_draws: int = 1000, seed: int = 0, level: float = 0.95) -> RandomBaseline:
    r"""Expected measure of a uniformly random ranking, by simulation.

    Each draw scores the candidates of every target by a uniformly random permutation of
    :math:`0, \dots, M_\tau - 1` (no ties) and averages the measure over targets; the result
    summarises ``n_draws`` draws (numpy ``Generator`` seeded with ``seed``).

    Exact expectations, for checking: :math:`\mathbb E[\tau_b] = 0` and
    :math:`\mathbb E[\tau_w] = 0` whenever the truth has no ties (for :math:`\tau_b` also with
    ties in the truth): for every pair of rank positions the two truths placed there are
    exchangeable, so each term of the numerator has mean 0 while the normalisation does not
    depend on the draw. (With ties in the truth the normalisation of :math:`\tau_w` depends on
    the draw and its expectation can differ slightly from 0.) For ``rel@k`` and ``regret@k``,
    with the truths sorted :math:`t_{(1)} \ge \dots \ge t_{(M)}`,

    .. math::

        \mathbb E \max_{m \in \operatorname{top}_k} t_m = \sum_{i=1}^{M}
            \frac{\binom{M-i}{k-1}}{\binom{M}{k}}\, t_{(i)},

    e.g. :math:`\mathbb E[\operatorname{rel@}1] = \bar t / t_{(1)}`.

    Parameters
    ----------
    measure:
        A measure name, :class:`Measure` or callable ``(scores, truth) -> float``.
    truth_by_target:
        ``{target: {candidate: ground truth}}``, finite, at least 2 candidates per target.
    n_draws:
        Number of random rankings, an integer ``>= 1`` (``sd`` and ``sem`` need ``>= 2``).
    seed:
        Seed of the numpy ``Generator``, an integer ``>= 0``.
    level:
        Level of the ``low`` / ``high`` range of the draws, strictly between 0 and 1.
    """
    m = _as_measure(measure)
    n_draws = _check_int(n_draws, "n_draws", 1)
    seed = _check_seed(seed)
    level = _check_level(level)
    table = _truth_table(truth_by_target, "truth_by_target")
    _check_positive_truth(m, table)
    return _summarize_draws(_random_draws(m, table, n_draws, seed), level)


# ---------------------------------------------------------------------------------------------
# everything together
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolRow:
    """One row of :class:`ProtocolResult`.

    Attributes
    ----------
    name:
        The method's name, or ``"seed_ceiling"``, ``"static_ranker"``, ``"random_ranking"``.
    kind:
        ``"method"``, ``"ceiling"``, ``"static"`` or ``"random"``.
    cells:
        ``{measure name: BootstrapInterval}`` (``RandomBaseline`` for the random row, whose
        ``low`` / ``high`` are the range of a random ranker's result, not a confidence interval).
    """

    name: str
    kind: str
    cells: dict[str, BootstrapInterval | RandomBaseline]


@dataclass(frozen=True)
class ProtocolResult:
    """Result of :func:`evaluate_methods`.

    Attributes
    ----------
    rows:
        The methods in input order, then ``seed_ceiling`` (when ``truth_runs`` was given),
        ``static_ranker`` and ``random_ranking``.
    measures:
        The measure names, in column order.
    higher_is_better:
        ``{measure: bool}`` (False for ``regret@k``).
    targets:
        The targets, in the order of ``truth``.
    n_boot, level, seed, over:
        The bootstrap settings.
    """

    rows: tuple[ProtocolRow, ...]
    measures: tuple[str, ...]
    higher_is_better: dict[str, bool]
    targets: tuple[Any, ...]
    n_boot: int
    level: float
    seed: int
    over: tuple[str, ...]

    def row(self, name: str) -> ProtocolRow:
        """The row called ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise AdvTransferError(f"no row named {name!r}; rows are {[r.name for r in self.rows]}")

    def to_rows(self) -> list[dict[str, Any]]:
        """Plain dicts for a table: ``name``, ``kind``, ``n_targets`` and, for every measure
        ``m``, ``m`` (the mean over targets), ``m_low``, ``m_high`` and ``m_sd`` (bootstrap
        standard error; for the random row the spread of a random ranker's result)."""
        out = []
        for r in self.rows:
            d: dict[str, Any] = {"name": r.name, "kind": r.kind, "n_targets": len(self.targets)}
            for m in self.measures:
                c = r.cells[m]
                d[m] = float(c.estimate)
                d[f"{m}_low"] = float(c.low)
                d[f"{m}_high"] = float(c.high)
                d[f"{m}_sd"] = float(c.sd)
            out.append(d)
        return out


_RESERVED = ("seed_ceiling", "static_ranker", "random_ranking")


def evaluate_methods(
    scores: Mapping[Any, Mapping[Any, Mapping[Any, float]]],
    truth: Mapping[Any, Mapping[Any, float]],
    *,
    truth_runs: Mapping[Any, Mapping[Any, Sequence[float]]] | None = None,
    measures: Sequence[Any] = DEFAULT_MEASURES,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    over: str | Sequence[str] = ("candidates", "targets"),
    n_draws: int = 1000,
    ties: Ties = "average",
    nan_policy: NanPolicy = "propagate",
    baselines: bool = True,
) -> ProtocolResult:
    r"""Evaluate several methods on several targets with the whole protocol.

    For every method and measure: the mean over targets and its percentile bootstrap interval
    (:func:`bootstrap_interval`; all methods and the static ranker use the *same* resamples,
    drawn from ``seed``, so their intervals are paired). Then the rows

    * ``seed_ceiling`` (only with ``truth_runs``): :func:`seed_agreement` with its bootstrap
      interval (same resampling of targets and candidates);
    * ``static_ranker``: :func:`static_ranker` scored like a method (skipped, with a warning,
      when there is only one target or the candidate sets differ between targets);
    * ``random_ranking``: :func:`random_baseline` (mean over draws; ``low`` / ``high`` are the
      range of a random ranker's result).

    Parameters
    ----------
    scores:
        ``{method: {target: {candidate: score}}}``; higher = predicted better; NaN or ``None``
        = not scored (see ``nan_policy``). Every method must score exactly the candidates of
        ``truth`` on every target (errors name method, target and candidate).
    truth:
        ``{target: {candidate: ground truth}}`` (e.g. fine-tuned accuracy, typically the mean
        over fine-tuning seeds), finite, at least 2 candidates per target.
    truth_runs:
        Optional ``{target: {candidate: [result of each fine-tuning seed]}}`` for the ceiling
        row (see :func:`seed_agreement`).
    measures:
        Measure names (:func:`get_measure`) or :class:`Measure` objects; default
        :data:`DEFAULT_MEASURES`.
    n_boot, level, seed, over:
        Bootstrap settings, as in :func:`bootstrap_interval`.
    n_draws:
        Number of random rankings of the random row, an integer ``>= 2``.
    ties, nan_policy:
        Passed to :func:`get_measure` for the measures given by name.
    baselines:
        Add the static and random rows (default True).
    """
    n_boot = _check_int(n_boot, "n_boot", 1)
    level = _check_level(level)
    seed = _check_seed(seed)
    over_t = _check_over(over)
    n_draws = _check_int(n_draws, "n_draws", 2)
    _check_choice(ties, "ties", ("average", "first"))
    _check_choice(nan_policy, "nan_policy", ("propagate", "omit"))
    ms = _resolve_measures(measures, ties, nan_policy)
    names = [m.name for m in ms]
    table, aligned = _aligned_scores(scores, truth, ms)
    plan = _plan([len(n) for n in table.names], n_boot, seed, over_t)

    rows = [ProtocolRow(str(method), "method",
                        {m.name: _method_interval(m, s_list, table, plan, level, over_t)
                         for m in ms})
            for method, s_list in aligned.items()]
    if truth_runs is not None:
        rows.append(_ceiling_row(truth_runs, table, ms, plan, level, over_t))
    if baselines:
        rows += _baseline_rows(truth, table, ms, plan, level, over_t, n_draws, seed)
    return ProtocolResult(tuple(rows), tuple(names), {m.name: m.higher_is_better for m in ms},
                          table.targets, n_boot, level, seed, over_t)


def _resolve_measures(measures: Sequence[Any], ties: Ties,
                      nan_policy: NanPolicy) -> list[Measure]:
    """The :class:`Measure` objects of :func:`evaluate_methods`' ``measures`` (a name, a
    Measure, or a sequence of them; names through :func:`get_measure` with ``ties`` and
    ``nan_policy``): at least one, with distinct names."""
    if isinstance(measures, (str, Measure)):
        measures = (measures,)
    ms = [get_measure(m, ties=ties, nan_policy=nan_policy) if isinstance(m, str)
          else _as_measure(m) for m in measures]
    if not ms:
        raise AdvTransferError("measures must name at least one measure; got an empty sequence")
    names = [m.name for m in ms]
    if len(set(names)) != len(names):
        raise AdvTransferError(f"measures must have distinct names; got {names}")
    return ms


def _aligned_scores(scores: Any, truth: Mapping[Any, Mapping[Any, float]],
                    ms: Sequence[Measure]) -> tuple[_Table, dict[Any, tuple[np.ndarray, ...]]]:
    """The truth table of ``truth`` (checked for every measure of ``ms``) and each method's
    scores aligned to it (:func:`_score_table`); errors name the method, and the names of the
    baseline rows are refused as method names."""
    if not isinstance(scores, Mapping) or not scores:
        raise AdvTransferError("scores must be a non-empty mapping method -> {target: "
                               "{candidate: score}}")
    table = _truth_table(truth)
    for m in ms:
        _check_positive_truth(m, table)
    aligned: dict[Any, tuple[np.ndarray, ...]] = {}
    for method, per in scores.items():
        if str(method) in _RESERVED:
            raise AdvTransferError(f"method name {method!r} is reserved for a baseline row; "
                                   "rename the method")
        try:
            aligned[method] = _score_table(per, table)
        except AdvTransferError as exc:
            raise type(exc)(f"method {method!r}: {exc}") from None
    return table, aligned


def _ceiling_row(truth_runs: Mapping[Any, Mapping[Any, Sequence[float]]], table: _Table,
                 ms: Sequence[Measure], plan: list[list[tuple[int, np.ndarray | None]]],
                 level: float, over_t: tuple[str, ...]) -> ProtocolRow:
    """The ``seed_ceiling`` row of :func:`evaluate_methods`: :func:`seed_agreement` of the
    fine-tuning runs with its bootstrap interval (the methods' resamples, ``plan``)."""
    runs_table, runs = _runs_table(truth_runs)
    if runs_table.targets != table.targets or runs_table.names != table.names:
        raise AdvTransferError("truth_runs must name the same targets and candidates as "
                               "truth, in the same order")
    return ProtocolRow("seed_ceiling", "ceiling",
                       {m.name: _ceiling_interval(m, runs_table, runs, plan, level, over_t)
                        for m in ms})


def _baseline_rows(truth: Mapping[Any, Mapping[Any, float]], table: _Table,
                   ms: Sequence[Measure], plan: list[list[tuple[int, np.ndarray | None]]],
                   level: float, over_t: tuple[str, ...], n_draws: int,
                   seed: int) -> list[ProtocolRow]:
    """The baseline rows of :func:`evaluate_methods`: ``static_ranker`` scored like a method
    (left out with a warning, attributed to the caller of :func:`evaluate_methods`, when it is
    undefined) and ``random_ranking`` (``n_draws`` random rankings from ``seed``)."""
    rows = []
    try:
        static = static_ranker(truth)
    except AdvTransferError as exc:
        warnings.warn(f"no static_ranker row: {exc}", UserWarning, stacklevel=3)
    else:
        s_list = _score_table(static, table)
        rows.append(ProtocolRow("static_ranker", "static",
                                {m.name: _method_interval(m, s_list, table, plan, level,
                                                          over_t) for m in ms}))
    rows.append(ProtocolRow("random_ranking", "random",
                            {m.name: _summarize_draws(_random_draws(m, table, n_draws, seed),
                                                      level) for m in ms}))
    return rows
