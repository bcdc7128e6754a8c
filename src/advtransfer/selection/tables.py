"""Tables of evaluations: :func:`summarize` tabulates one evaluation metric per target and
method with its mean, :func:`markdown_table` renders that table, :func:`evaluation_to_dict`
makes one :class:`~advtransfer.estimators.RankingEvaluation` JSON-ready."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError
from advtransfer.estimators import RankingEvaluation
from advtransfer.report import md_table
from advtransfer.selection.results import _finite, _sort_key

__all__ = ["evaluation_to_dict", "markdown_table", "summarize"]


def summarize(
    evaluations: Mapping[str, Mapping[str, RankingEvaluation]],
    metric: str = "weighted_tau",
) -> dict[str, dict[str, float]]:
    """``{method: {target: value, ..., "mean": mean}}`` of one evaluation ``metric`` over the
    targets of ``evaluations`` (``{target: {method: RankingEvaluation}}``).

    ``metric`` is ``"weighted_tau"``, ``"kendall_tau"``, ``"pearson"`` or ``"top{k}"`` (the
    top-k relative accuracy). The mean is over targets where the value is defined (``nan`` if
    none)."""
    if not isinstance(evaluations, Mapping) or not evaluations:
        raise AdvTransferError("evaluations must be a non-empty mapping target -> "
                               "{method: RankingEvaluation}")
    fields_ = ("weighted_tau", "kendall_tau", "pearson")
    if metric not in fields_ and not (metric.startswith("top") and metric[3:].isdigit()):
        raise AdvTransferError(f"metric must be one of {list(fields_)} or 'top<k>'; got "
                               f"{metric!r}")
    methods = list(dict.fromkeys(m for ev in evaluations.values() for m in ev))
    table: dict[str, dict[str, float]] = {}
    for method in methods:
        row: dict[str, float] = {}
        for target, ev in evaluations.items():
            e = ev.get(method)
            if e is None:
                value = math.nan
            elif metric in fields_:
                value = float(getattr(e, metric))
            else:
                value = float(e.top_k.get(int(metric[3:]), math.nan))
            row[str(target)] = value
        vals = [v for v in row.values() if math.isfinite(v)]
        row["mean"] = float(np.mean(vals)) if vals else math.nan
        table[method] = row
    return table


def markdown_table(summary: Mapping[str, Mapping[str, float]], *, digits: int = 3,
                   sort: bool = True) -> str:
    """A Markdown table of :func:`summarize` output: one row per method (sorted by the mean,
    best first, when ``sort``), one column per target and the mean; "—" marks undefined."""
    if not summary:
        return ""
    cols = list(dict.fromkeys(k for row in summary.values() for k in row))
    cols = [c for c in cols if c != "mean"] + (["mean"] if any("mean" in r for r in
                                                                summary.values()) else [])
    rows = list(summary.items())
    if sort:
        rows.sort(key=lambda kv: _sort_key(kv[1].get("mean", math.nan)))

    def cell(v: Any) -> str:
        return f"{float(v):.{digits}f}" if _finite(v) else "—"

    return md_table(["method", *cols], [[m, *(cell(r.get(c)) for c in cols)] for m, r in rows])


def evaluation_to_dict(ev: RankingEvaluation) -> dict[str, Any]:
    """A JSON-ready dictionary of a :class:`RankingEvaluation` (top-k keys as ``top{k}``)."""
    d = asdict(ev)
    top = d.pop("top_k")
    d.update({f"top{k}": v for k, v in top.items()})
    return d
