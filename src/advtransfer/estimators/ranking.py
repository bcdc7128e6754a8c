r"""Evaluating a ranking of candidate source models against ground-truth transfer results.

A transferability estimator assigns each candidate model a score; after fine-tuning every
candidate on the target task one obtains its ground-truth accuracy. The functions here measure how
well the scores rank the candidates. The field's standard is the weighted Kendall tau
(:func:`scipy.stats.weightedtau`, used e.g. by You et al., ICML 2021, for LogME), which weights
disagreements among the top-ranked candidates more heavily.

Correlations are undefined when either input is constant (e.g. an estimator that gives every
candidate the same score); they are then returned as ``nan`` rather than hidden or replaced, so
that a degenerate estimator shows up in the results.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.estimators._validate import as_array

__all__ = [
    "RankingEvaluation",
    "evaluate_ranking",
    "kendall_tau",
    "pearson",
    "top_k_relative_accuracy",
    "weighted_kendall_tau",
]


def _pair(scores: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_array(scores, "scores", ndim=1, shape_hint="(n_candidates,)")
    t = as_array(truth, "truth", ndim=1, shape_hint="(n_candidates,)")
    if s.shape[0] != t.shape[0]:
        raise AdvTransferError(
            f"scores and truth must have the same number of candidates; got {s.shape[0]} "
            f"and {t.shape[0]}"
        )
    if s.shape[0] < 2:
        raise AdvTransferError(
            f"scores and truth must describe at least 2 candidates; got {s.shape[0]}"
        )
    return s, t


def _statistic(result: Any) -> float:
    value = getattr(result, "statistic", None)
    if value is None:  # scipy < 1.9 returns a plain (correlation, pvalue) tuple
        value = result[0]
    return float(value)


# scipy.stats.weightedtau without the axis/nan-policy decorator where scipy has one
_WEIGHTEDTAU = getattr(stats.weightedtau, "__wrapped__", stats.weightedtau)


def weighted_kendall_tau(scores: Any, truth: Any) -> float:
    r"""Weighted Kendall :math:`\tau_w` between estimator ``scores`` and ground-truth ``truth``.

    Computed as ``scipy.stats.weightedtau(scores, truth)`` with scipy's defaults, i.e.
    ``rank=True`` (not ``rank=None``), ``weigher=None`` (hyperbolic: rank :math:`r` weighs
    :math:`1 / (r + 1)`, :math:`r = 0` for the top element) and ``additive=True`` (a pair weighs
    the *sum* of its two elements' weights). Swaps among the best candidates therefore cost more
    than swaps among the worst. In :math:`[-1, 1]`; 1 for a perfect ranking; ``nan`` if either
    input is constant.

    Which ranking the weights follow: with ``rank=True`` scipy computes Vigna's index twice, once
    with the ranks :math:`r` of the decreasing lexicographic order by ``(scores, truth)`` (the
    highest score has rank 0; tied scores are ordered by decreasing truth) and once with those of
    the decreasing lexicographic order by ``(truth, scores)``, and returns the average. For one
    such ranking :math:`r`, with :math:`w_{ij} = 1/(r_i + 1) + 1/(r_j + 1)`,

    .. math::

        \tau^{(r)} = \frac{\sum_{i<j} w_{ij}\, \operatorname{sgn}(s_i - s_j)
                \operatorname{sgn}(t_i - t_j)}
            {\sqrt{\sum_{i<j} w_{ij} [s_i \ne s_j] \; \sum_{i<j} w_{ij} [t_i \ne t_j]}},
        \qquad \tau_w = \tfrac12 \big(\tau^{(r_{s,t})} + \tau^{(r_{t,s})}\big)

    (S. Vigna, *A weighted correlation index for rankings with ties*, WWW 2015). The value is
    therefore symmetric in its two arguments (the published evaluation code of Agostinelli et
    al., ECCV 2022, calls ``weightedtau(truth, scores)``, the SFDA code
    ``weightedtau(scores, truth)``: both give this value) and does not depend on the order of
    the candidates, ties included.

    Parameters
    ----------
    scores:
        ``(M,)`` transferability scores of the candidates (higher = predicted better).
    truth:
        ``(M,)`` ground-truth results (e.g. fine-tuned accuracy) in the same order.
    """
    s, t = _pair(scores, truth)
    if np.ptp(s) > 0 and np.ptp(t) > 0:  # _pair has refused non-finite values
        # the common case, called thousands of times by the subsampling intervals: scipy's
        # function without its nan-policy wrapper (5x less overhead; the same computation)
        return _statistic(_WEIGHTEDTAU(s, t))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _statistic(stats.weightedtau(s, t))


def kendall_tau(scores: Any, truth: Any) -> float:
    r"""Kendall :math:`\tau_b` rank correlation (:func:`scipy.stats.kendalltau`).

    ``nan`` if either input is constant.

    .. math::

        \tau_b = \frac{P - Q}{\sqrt{(P + Q + T_s)(P + Q + T_t)}}

    with :math:`P, Q` the concordant and discordant pairs and :math:`T_s, T_t` the pairs tied
    only in ``scores`` or only in ``truth``.
    """
    s, t = _pair(scores, truth)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _statistic(stats.kendalltau(s, t))


def pearson(scores: Any, truth: Any) -> float:
    r"""Pearson linear correlation :math:`r` (:func:`scipy.stats.pearsonr`); ``nan`` if constant.

    .. math::

        r = \frac{\sum_m (s_m - \bar s)(t_m - \bar t)}
                 {\sqrt{\sum_m (s_m - \bar s)^2 \sum_m (t_m - \bar t)^2}}
    """
    s, t = _pair(scores, truth)
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _statistic(stats.pearsonr(s, t))


def _check_k(k: Any, n: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise AdvTransferTypeError(f"{name} must be an integer; got {type(k).__name__}")
    if not 1 <= int(k) <= n:
        raise AdvTransferError(
            f"{name} must be between 1 and the number of candidates ({n}); got {int(k)}"
        )
    return int(k)


def top_k_relative_accuracy(scores: Any, truth: Any, k: int) -> float:
    r"""Best ground truth among the ``k`` top-scored candidates over the best ground truth overall.

    .. math::

        \operatorname{rel@}k = \frac{\max_{m \in \operatorname{top}_k(s)} t_m}{\max_m t_m}

    1.0 means the best model is among the ``k`` candidates the estimator would pick: the
    "relative top-1 accuracy" of Agostinelli et al. (ECCV 2022) for ``k = 1`` and ``rel_k`` of
    the SFDA code (TencentARC/SFDA, ``rank_correlation.py``) for any ``k``. Ties in ``scores``
    are broken by input order (the earlier candidate ranks higher), as in that code; for a value
    that does not depend on the order of the candidates (the expectation over the orders of tied
    candidates) see :func:`advtransfer.estimators.protocol.rel_at_k`. ``truth`` must have a
    positive maximum (e.g. accuracies).

    Parameters
    ----------
    scores, truth:
        ``(M,)`` arrays as in :func:`weighted_kendall_tau`.
    k:
        Number of top-scored candidates, ``1 <= k <= M``.
    """
    s, t = _pair(scores, truth)
    k = _check_k(k, s.shape[0])
    best = float(t.max())
    if best <= 0:
        raise AdvTransferError(
            f"truth must have a positive maximum for a relative accuracy; got max {best:.6g}"
        )
    order = np.argsort(-s, kind="stable")
    return float(t[order[:k]].max() / best)


@dataclass(frozen=True)
class RankingEvaluation:
    """How well a set of transferability scores ranks the candidate models.

    Attributes
    ----------
    weighted_tau:
        :func:`weighted_kendall_tau` (the field's headline metric); ``nan`` if undefined.
    kendall_tau:
        :func:`kendall_tau`; ``nan`` if undefined.
    pearson:
        :func:`pearson`; ``nan`` if undefined.
    top_k:
        ``{k: top_k_relative_accuracy(..., k)}`` for every requested ``k``.
    """

    weighted_tau: float
    kendall_tau: float
    pearson: float
    top_k: dict[int, float] = field(default_factory=dict)


def evaluate_ranking(
    scores: Mapping[str, float],
    truth: Mapping[str, float],
    *,
    ks: Iterable[int] = (1, 3),
) -> RankingEvaluation:
    """Evaluate estimator ``scores`` against ground-truth ``truth``, both keyed by candidate name.

    The candidates are aligned by name; both mappings must name exactly the same candidates (at
    least 2), with finite values. Every ``k`` in ``ks`` must be between 1 and the number of
    candidates. Correlations of constant inputs are ``nan`` (see the module docstring).

    Parameters
    ----------
    scores:
        ``{candidate name: transferability score}``.
    truth:
        ``{candidate name: ground-truth result}``, e.g. fine-tuned target accuracy.
    ks:
        The ``k`` values for :func:`top_k_relative_accuracy`.
    """
    for name, mapping in (("scores", scores), ("truth", truth)):
        if not isinstance(mapping, Mapping):
            raise AdvTransferTypeError(
                f"{name} must be a mapping from candidate name to value; "
                f"got {type(mapping).__name__}"
            )
    missing_truth = sorted(map(str, set(scores) - set(truth)))
    missing_scores = sorted(map(str, set(truth) - set(scores)))
    if missing_truth or missing_scores:
        parts = []
        if missing_truth:
            parts.append(f"in scores but not in truth: {missing_truth}")
        if missing_scores:
            parts.append(f"in truth but not in scores: {missing_scores}")
        raise AdvTransferError(
            "scores and truth must name the same candidates; " + "; ".join(parts)
        )
    names: Sequence[Any] = list(scores)
    if len(names) < 2:
        raise AdvTransferError(
            f"scores and truth must describe at least 2 candidates; got {len(names)}"
        )
    s = _values(scores, names, "scores")
    t = _values(truth, names, "truth")
    ks = tuple(ks)
    if not ks:
        raise AdvTransferError("ks must contain at least one k; got an empty sequence")
    ks_checked = tuple(_check_k(k, len(names), "ks entry") for k in ks)
    return RankingEvaluation(
        weighted_tau=weighted_kendall_tau(s, t),
        kendall_tau=kendall_tau(s, t),
        pearson=pearson(s, t),
        top_k={k: top_k_relative_accuracy(s, t, k) for k in ks_checked},
    )


def _values(mapping: Mapping[str, float], names: Sequence[Any], what: str) -> np.ndarray:
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        value = mapping[name]
        try:
            out[i] = float(value)
        except (TypeError, ValueError) as exc:
            raise AdvTransferTypeError(
                f"{what}[{name!r}] must be a number; got {type(value).__name__}"
            ) from exc
        if not math.isfinite(out[i]):
            raise AdvTransferError(f"{what}[{name!r}] must be finite; got {out[i]}")
    return out
