"""The result of :func:`advtransfer.selection.rank` and its evaluation against ground truth.

:class:`RankingResult` holds every candidate's score by every method (higher = predicted to
transfer better; undefined scores rank last) and orders, tabulates and exports them;
:func:`evaluate_methods` compares scores with ground-truth transfer results (weighted Kendall tau,
Kendall tau, Pearson r, top-k relative accuracy; :mod:`advtransfer.estimators.ranking`).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.estimators import RankingEvaluation, evaluate_ranking

__all__ = ["RankingResult", "evaluate_methods"]


def _sort_key(value: float) -> tuple[int, float]:
    return (1, 0.0) if value is None or not math.isfinite(value) else (0, -float(value))


@dataclass(frozen=True)
class RankingResult:
    """Scores of every candidate by every method (higher = predicted to transfer better).

    Attributes:
        candidates: candidate names, in input order.
        methods: the methods computed, in the order asked (the first is the default sort key).
        scores: ``{method: {candidate: score}}``; ``nan`` where a method is undefined for a
            candidate (e.g. alpha1 when the victim never moves), ranked last.
        details: ``{candidate: {...}}`` extra numbers, e.g. ``n_alpha1_above_one_t2s`` (PGD is
            approximate, so alpha1 may exceed 1; never clipped), ``feature_dim``,
            ``finetune_train_accuracy``.
        timings: wall time in seconds per stage: ``adversarial`` (the whole pool), ``forward``
            (feature passes), one entry per estimator, ``linear_probe``.
        config: the resolved settings (attack, samples, seed, device).
        reference_accuracy: accuracy of the reference (target-trained) model on the labelled
            target data given to :func:`~advtransfer.selection.rank` (``None`` when no
            adversarial method was asked for). The alpha scores measure how the candidates
            follow the reference, so they say little when the reference itself classifies the
            target poorly.
    """

    candidates: tuple[str, ...]
    methods: tuple[str, ...]
    scores: dict[str, dict[str, float]] = field(repr=False)
    details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    reference_accuracy: float | None = None

    def _method(self, method: str | None) -> str:
        if method is None:
            return self.methods[0]
        if method not in self.scores:
            raise AdvTransferError(f"method must be one of the computed methods "
                                   f"{list(self.methods)}; got {method!r}")
        return method

    def order(self, method: str | None = None) -> list[str]:
        """Candidate names best first by ``method`` (default: the first method); undefined
        scores last; ties keep the input order."""
        m = self._method(method)
        return sorted(self.candidates, key=lambda c: _sort_key(self.scores[m][c]))

    def best(self, method: str | None = None) -> str:
        """The candidate ``method`` would pick."""
        return self.order(method)[0]

    def table(self, method: str | None = None) -> list[dict[str, Any]]:
        """One row per candidate, sorted by ``method`` (best first): ``rank``, ``candidate``
        and every method's score."""
        m = self._method(method)
        return [{"rank": i + 1, "candidate": c, **{k: self.scores[k][c] for k in self.methods}}
                for i, c in enumerate(self.order(m))]

    def evaluate(self, truth: Mapping[str, float], *,
                 ks: Iterable[int] = (1, 3)) -> dict[str, RankingEvaluation]:
        """:func:`evaluate_methods` of these scores against ground truth ``truth``."""
        return evaluate_methods(self.scores, truth, ks=ks)

    def to_dict(self, method: str | None = None) -> dict[str, Any]:
        """A JSON-ready dictionary: scores, the ranking by every method and the sorted table."""
        m = self._method(method)
        return {"sort_by": m, "methods": list(self.methods), "candidates": list(self.candidates),
                "reference_accuracy": self.reference_accuracy,
                "scores": {k: dict(v) for k, v in self.scores.items()},
                "ranking": {k: self.order(k) for k in self.methods},
                "table": self.table(m), "details": self.details, "timings": self.timings,
                "config": self.config}

    def to_csv(self, method: str | None = None) -> str:
        """The :meth:`table` as CSV text (``rank,candidate,<methods>``; empty cell = undefined)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rank", "candidate", *self.methods])
        for row in self.table(method):
            writer.writerow([row["rank"], row["candidate"],
                             *("" if not _finite(row[k]) else repr(float(row[k]))
                               for k in self.methods)])
        return buf.getvalue()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


def evaluate_methods(
    scores: Mapping[str, Mapping[str, float]] | RankingResult,
    truth: Mapping[str, float],
    *,
    source_accuracy: Mapping[str, float] | None = None,
    ks: Iterable[int] = (1, 3),
) -> dict[str, RankingEvaluation]:
    r"""How well each method's scores rank the candidates against ground truth.

    For every method, :func:`advtransfer.estimators.evaluate_ranking`: the weighted Kendall
    tau (:func:`scipy.stats.weightedtau`, hyperbolic weights 1/(r+1), the field's headline
    metric, You et al. ICML 2021), Kendall tau_b, Pearson r and the top-k relative accuracy
    max_{m in top_k(s)} t_m / max_m t_m for every k in ``ks`` no larger than the number of
    candidates.

    Args:
        scores: ``{method: {candidate: score}}`` (or a :class:`RankingResult`); higher = better.
            A non-finite (or ``None``) score is undefined and ranked *last*: it is replaced by a
            value below every finite score of that method (with a warning). A method with no
            finite score gets ``nan`` everywhere.
        truth: ``{candidate: ground-truth result}`` (e.g. fine-tuned target accuracy), finite.
        source_accuracy: each candidate's accuracy on its own source task; adds the data-free
            baseline method ``"source_accuracy"`` that ranks by it.
        ks: the k values of the top-k relative accuracy.

    Returns:
        ``{method: RankingEvaluation}`` in the order of ``scores`` (baseline last).
    """
    if isinstance(scores, RankingResult):
        scores = scores.scores
    if not isinstance(scores, Mapping):
        raise AdvTransferTypeError(f"scores must be a mapping method -> {{candidate: score}}; "
                                   f"got {type(scores).__name__}")
    if not isinstance(truth, Mapping):
        raise AdvTransferTypeError(f"truth must be a mapping candidate -> result; got "
                                   f"{type(truth).__name__}")
    all_scores: dict[str, Mapping[str, float]] = dict(scores)
    if source_accuracy is not None:
        if "source_accuracy" in all_scores:
            raise AdvTransferError("scores already has a 'source_accuracy' method; do not also "
                                   "pass source_accuracy=")
        all_scores["source_accuracy"] = source_accuracy
    if not all_scores:
        raise AdvTransferError("scores is empty; pass at least one method")
    ks_t = tuple(ks)
    for k in ks_t:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise AdvTransferError(f"ks must hold integers >= 1; got {k!r}")
    n = len(truth)
    usable = tuple(int(k) for k in ks_t if k <= n) or (1,)
    out: dict[str, RankingEvaluation] = {}
    for method, per in all_scores.items():
        if not isinstance(per, Mapping):
            raise AdvTransferTypeError(f"scores[{method!r}] must be a mapping candidate -> "
                                       f"score; got {type(per).__name__}")
        values: dict[str, float] = {}
        for cand, v in per.items():
            try:
                values[cand] = math.nan if v is None else float(v)
            except (TypeError, ValueError):
                raise AdvTransferTypeError(f"scores[{method!r}][{cand!r}] must be a number; got "
                                           f"{type(v).__name__}") from None
        bad = [c for c, v in values.items() if not math.isfinite(v)]
        if len(bad) == len(values) and values:
            if set(values) != set(truth):
                evaluate_ranking(values, truth, ks=usable)  # raises the naming error
            out[method] = RankingEvaluation(math.nan, math.nan, math.nan,
                                            {k: math.nan for k in usable})
            continue
        if bad:
            warnings.warn(f"method {method!r} has no finite score for {bad}; ranked last",
                          RuntimeWarning, stacklevel=2)
            finite = [v for v in values.values() if math.isfinite(v)]
            floor = min(finite) - 1.0 - (max(finite) - min(finite))
            values = {c: (floor if c in bad else v) for c, v in values.items()}
        try:
            out[method] = evaluate_ranking(values, truth, ks=usable)
        except AdvTransferError as exc:
            raise type(exc)(f"method {method!r}: {exc}") from None
    return out
