"""Human-readable report of a run: CSV, figures, Markdown and HTML, all written atomically.

:func:`write_report` takes the run's results dictionary (the content of ``results.json``) and
writes, under ``out_dir``::

    results.csv          one row per record (union of record keys, first-seen order)
    correlations.json    what :func:`advtransfer.stats.correlation_table` returned (with, when
                         the report names ``groups``, each row's within-group result as
                         ``row["within"]``)
    groups.json          only with ``groups``: per-group means, the correlation of the group
                         variable with each metric and outcome, the within-group correlations
    figures/*.png        scatter plots per outcome, sweep curves, transfer-matrix heatmaps
    report.md            title, description, run details, tables, honest reading, figures
    report.html          the same content as one standalone page (inline CSS, relative images)

``results["report"]["groups"]`` may name a record key whose values set groups by design (e.g.
the share of the target's classes a source was trained on). The report then adds a section on
the correlations within those groups (:func:`advtransfer.stats.within_group_correlation`), which
the pooled ones can hide, and a section saying what the run shows and does not show.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, without
pyplot: no backend is selected or switched (an interactive session keeps its own), no global
figure registry is touched, and nothing has to be closed. Importing this module does not import
matplotlib.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import math
import numbers
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advtransfer.errors import AdvTransferError
from advtransfer.fileio import atomic_write_bytes, atomic_write_text, to_jsonable, write_json
from advtransfer.stats import (
    EXACT_SPEARMAN_MAX_N,
    correlation_table,
    group_summary,
    within_group_table,
)

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["md_table", "write_report"]

_DPI = 120
_DASH = "—"
_ALPHA = 0.05
_MARKER_SIZE = 55.0  # scatter marker area in points^2


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def _fmt_value(v: Any) -> str:
    """A table cell: numbers to 4 significant digits, missing values as an em dash."""
    if v is None:
        return _DASH
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if _is_number(v):
        f = float(v)
        if math.isnan(f):
            return _DASH
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        return f"{f:.4g}"
    if isinstance(v, (Mapping, list, tuple)):
        text = json.dumps(to_jsonable(v), separators=(",", ":"))
        return text if len(text) <= 40 else text[:39] + "…"
    return str(v)


def _fmt_p(p: Any) -> str:
    """A p-value: 2 significant digits, floored at ``< 0.001`` (tests do not resolve less)."""
    if not _finite(p):
        return "n/a"
    p = float(p)
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def _fmt_r(r: Any) -> str:
    return f"{float(r):.2f}" if _finite(r) else "n/a"


def _fmt_r_ci(row: Mapping[str, Any], stat: str, lo: str, hi: str) -> str:
    if not _finite(row.get(stat)):
        return _DASH
    text = f"{float(row[stat]):.3f}"
    if _finite(row.get(lo)) and _finite(row.get(hi)):
        text += f" [{float(row[lo]):.3f}, {float(row[hi]):.3f}]"
    else:
        text += " [—]"
    return text


def _fmt_seconds(s: float) -> str:
    total = float(s)
    if total < 60:
        return f"{total:.1f} s"
    minutes, sec = divmod(round(total), 60)
    hours, minutes = divmod(minutes, 60)
    parts = ([f"{hours} h"] if hours else []) + [f"{minutes} min", f"{sec} s"]
    return f"{total:.1f} s ({' '.join(parts)})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "figure"


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(to_jsonable(v))
    if _is_number(v) and not isinstance(v, numbers.Integral):
        return repr(float(v))
    return str(v)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    title: str
    description: str
    metrics: list[str]
    outcomes: list[str]
    sweep: str | None
    groups: str | None
    labels: dict[str, str]
    columns: list[str] | None
    records: list[Mapping[str, Any]]
    matrices: dict[str, tuple[list[str], list[list[Any]]]]

    def label(self, key: str) -> str:
        return self.labels.get(key, key)


def _str_list(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(k, str) for k in value):
        raise AdvTransferError(f"{name} must be a list of strings, got {value!r}")
    return list(dict.fromkeys(value))


def _parse(results: Any) -> _Spec:
    if not isinstance(results, Mapping):
        raise AdvTransferError(f"results must be a dict, got {type(results).__name__}")
    records = results.get("records")
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)) or not all(
            isinstance(r, Mapping) for r in records):
        raise AdvTransferError("results['records'] must be a list of dicts (one per source model)")
    report = results.get("report")
    if not isinstance(report, Mapping):
        raise AdvTransferError(
            "results['report'] must be a dict with 'title', 'metrics' and 'outcomes'")
    title = report.get("title")
    if not isinstance(title, str) or not title.strip():
        raise AdvTransferError(f"results['report']['title'] must be a non-empty string, "
                               f"got {title!r}")
    description = report.get("description") or ""
    if not isinstance(description, str):
        raise AdvTransferError("results['report']['description'] must be a string")
    metrics = _str_list(report.get("metrics"), "results['report']['metrics']")
    outcomes = _str_list(report.get("outcomes"), "results['report']['outcomes']")
    sweep = report.get("sweep")
    if sweep is not None and not isinstance(sweep, str):
        raise AdvTransferError(f"results['report']['sweep'] must be a record key or None, "
                               f"got {sweep!r}")
    groups = report.get("groups")
    if groups is not None and not isinstance(groups, str):
        raise AdvTransferError(f"results['report']['groups'] must be a record key or None, "
                               f"got {groups!r}")
    labels = report.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise AdvTransferError("results['report']['labels'] must map record keys to strings")
    columns = report.get("columns")
    if columns is not None:
        columns = _str_list(columns, "results['report']['columns']")

    if records:
        known = {k for r in records for k in r}
        wanted = {"metrics": metrics, "outcomes": outcomes, "sweep": [sweep] if sweep else [],
                  "groups": [groups] if groups else [], "columns": columns or []}
        for name, keys in wanted.items():
            unknown = [k for k in keys if k not in known]
            if unknown:
                raise AdvTransferError(
                    f"results['report']['{name}'] names keys that no record has: {unknown}; "
                    f"record keys are {sorted(known)}")

    matrices: dict[str, tuple[list[str], list[list[Any]]]] = {}
    raw = results.get("matrices") or {}
    if not isinstance(raw, Mapping):
        raise AdvTransferError("results['matrices'] must be a dict name -> {'names', 'values'}")
    for mname, m in raw.items():
        where = f"results['matrices'][{mname!r}]"
        if not isinstance(m, Mapping):
            raise AdvTransferError(f"{where} must be a dict with 'names' and 'values'")
        names = [str(s) for s in _seq(m.get("names"), f"{where}['names']")]
        values = [list(_seq(row, f"{where}['values'] row")) for row in
                  _seq(m.get("values"), f"{where}['values']")]
        if len(values) != len(names) or any(len(row) != len(names) for row in values):
            raise AdvTransferError(
                f"{where}['values'] must be a {len(names)} x {len(names)} list of lists "
                f"(one row and column per name), got {len(values)} rows of lengths "
                f"{[len(row) for row in values]}")
        for row in values:
            for v in row:
                if v is not None and not _is_number(v):
                    raise AdvTransferError(f"{where}['values'] entries must be numbers or None, "
                                           f"got {v!r}")
        matrices[str(mname)] = (names, values)

    return _Spec(title=title, description=description, metrics=metrics, outcomes=outcomes,
                 sweep=sweep, groups=groups, labels=dict(labels), columns=columns,
                 records=list(records), matrices=matrices)


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AdvTransferError(f"{name} must be a list, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _num(v: Any) -> float:
    return float(v) if _finite(v) else math.nan


def _corr_title(row: Mapping[str, Any]) -> str:
    if not _finite(row.get("pearson_r")) and not _finite(row.get("spearman_rho")):
        reason = str(row.get("note") or "not enough data").split(";")[0]
        return "correlation undefined\n" + textwrap.fill(reason, 48)
    line1 = (f"r = {_fmt_r(row.get('pearson_r'))} (p {_p_eq(row.get('pearson_p'))}), "
             f"ρ = {_fmt_r(row.get('spearman_rho'))} (p {_p_eq(_spearman_p(row))})")
    line2 = f"n = {row.get('n')}"
    if _finite(row.get("pearson_ci_low")) and _finite(row.get("pearson_ci_high")):
        conf = float(row.get("confidence") or 0.95)
        line2 += (f", {conf * 100:g}% CI for r: [{float(row['pearson_ci_low']):.2f}, "
                  f"{float(row['pearson_ci_high']):.2f}]")
    within = row.get("within") or {}
    if _finite(within.get("r")):
        line2 += (f"\nwithin equal {within.get('group')}: r_w = {_fmt_r(within['r'])} "
                  f"(p {_p_eq(within.get('p'))})")
        if _finite(within.get("ci_low")) and _finite(within.get("ci_high")):
            line2 += f", CI [{float(within['ci_low']):.2f}, {float(within['ci_high']):.2f}]"
    return f"{line1}\n{line2}"


def _spearman_p(row: Mapping[str, Any]) -> Any:
    """The exact permutation p-value when the row has one (small n), else scipy's."""
    exact = row.get("spearman_p_exact")
    return exact if _finite(exact) else row.get("spearman_p")


def _p_eq(p: Any) -> str:
    text = _fmt_p(p)
    return text if text.startswith("<") else f"= {text}"


def _sweep_values(spec: _Spec) -> list[float] | None:
    """Numeric sweep value per record (NaN where missing), or None when there is nothing to use."""
    if spec.sweep is None:
        return None
    vals = [spec.records[i].get(spec.sweep) for i in range(len(spec.records))]
    if not any(_finite(v) for v in vals):
        return None
    return [_num(v) for v in vals]


def _point_label(rec: Mapping[str, Any], i: int) -> str:
    src = rec.get("source")
    return str(src) if src is not None else f"#{i}"


#: Units of record keys on figure axes, by substring of the key (first match wins); keys that
#: match none get no unit rather than a made-up one.
_UNITS: tuple[tuple[str, str], ...] = (
    ("rank average", "mean normalised rank, 0–1"), ("nleep", "mean probability, 0–1"),
    ("sfda", "mean probability, 0–1"), ("parc", "Spearman r x 100"),
    ("lfc", "correlation, −1 to 1"), ("lgc", "correlation, −1 to 1"), ("tmi", "nats"),
    ("ncti", "pool-normalised, 0–3"), ("etran", "pool-normalised"),
    ("accuracy", "fraction correct, 0–1"), ("loss", "cross-entropy, nats"),
    ("rmse", "target units"), ("alpha", "ratio, unitless"), ("combined", "unitless"),
    ("distance", "unitless"), ("share", "fraction, 0–1"), ("logme", "log evidence per sample"),
    ("leep", "log-likelihood, nats"), ("nce", "negative conditional entropy, nats"),
    ("hscore", "score, unitless"), ("transrate", "nats"), ("gbc", "score, unitless"),
    ("tau", "−1 to 1, unitless"),
)


def _axis_label(spec: _Spec, key: str) -> str:
    """The key's label with its unit, e.g. ``transfer accuracy (fraction correct, 0–1)``."""
    label = spec.label(key)
    # the label a recipe gives says what the quantity is (``loss_f_S`` is labelled as an
    # RMSE): look there first, then at the key
    unit = next((u for text in (label.lower(), key.lower()) for k, u in _UNITS if k in text),
                None)
    return f"{label} ({unit})" if unit and unit not in label else label


def _target_groups(spec: _Spec) -> list[tuple[str, list[int]]] | None:
    """``[(target, record indices)]`` when the records span several target tasks (a ``target``
    key with at least two values), so that figures can tell the targets apart; else None."""
    values = [r.get("target") for r in spec.records]
    if any(v is None for v in values) or len(set(map(str, values))) < 2:
        return None
    order = list(dict.fromkeys(map(str, values)))
    return [(t, [i for i, v in enumerate(values) if str(v) == t]) for t in order]


def _target_colours(targets: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {t: cmap(i % 10) for i, t in enumerate(targets)}


#: Above this many records the scatter points are not labelled (the labels would hide the data).
MAX_LABELLED_POINTS = 24


def _scatter_figure(spec: _Spec, outcome: str, corr: Mapping[tuple[str, str], Mapping[str, Any]],
                    ) -> Figure:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    k = len(spec.metrics)
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    colour = _sweep_values(spec)
    groups = None if colour else _target_groups(spec)
    colours = _target_colours([t for t, _ in groups]) if groups else {}
    fig = _new_figure(5.4 * ncols + (1.0 if colour else 0.0), 4.9 * nrows + 0.9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    cmap = colormaps["viridis"]
    norm = None
    if colour:
        finite_c = [c for c in colour if math.isfinite(c)]
        lo, hi = min(finite_c), max(finite_c)
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
    mappable = None
    labelled: list[tuple[Axes, list[Any]]] = []
    for ax, metric in zip(axes, spec.metrics, strict=False):
        pts = [(i, _num(r.get(metric)), _num(r.get(outcome))) for i, r in enumerate(spec.records)]
        pts = [(i, x, y) for i, x, y in pts if math.isfinite(x) and math.isfinite(y)]
        ax.set_xlabel(textwrap.fill(_axis_label(spec, metric), 48))
        ax.set_ylabel(_axis_label(spec, outcome))
        ax.set_title(_corr_title(corr[(metric, outcome)]), fontsize=10)
        ax.grid(True, alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no record has both values", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
            continue
        xs = [x for _, x, _ in pts]
        ys = [y for _, _, y in pts]
        if colour and norm is not None:
            cs = [colour[i] for i, _, _ in pts]
            have = [math.isfinite(c) for c in cs]
            if any(have):
                mappable = ax.scatter([x for x, h in zip(xs, have, strict=True) if h],
                                      [y for y, h in zip(ys, have, strict=True) if h],
                                      c=[c for c, h in zip(cs, have, strict=True) if h],
                                      cmap=cmap, norm=norm, s=_MARKER_SIZE, edgecolors="black",
                                      linewidths=0.6, zorder=3)
            if not all(have):
                ax.scatter([x for x, h in zip(xs, have, strict=True) if not h],
                           [y for y, h in zip(ys, have, strict=True) if not h],
                           c="0.75", s=_MARKER_SIZE, edgecolors="black", linewidths=0.6, zorder=3,
                           label=f"no {spec.label(spec.sweep or '')}")
                ax.legend(loc="best", fontsize=8, framealpha=0.8)
        elif groups:
            for target, members in groups:
                keep = [j for j, (i, _, _) in enumerate(pts) if i in members]
                ax.scatter([xs[j] for j in keep], [ys[j] for j in keep], s=_MARKER_SIZE,
                           color=colours[target], edgecolors="black", linewidths=0.6, zorder=3,
                           label=f"target {target}")
        else:
            ax.scatter(xs, ys, s=_MARKER_SIZE, color="tab:blue", edgecolors="black", linewidths=0.6,
                       zorder=3, label="one source model")
        if len(spec.records) <= MAX_LABELLED_POINTS:
            labelled.append((ax, _annotate_points(ax, pts, spec)))
        ax.margins(x=0.15, y=0.2)
    for ax in axes[k:]:
        ax.set_visible(False)
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=list(axes[:k]), shrink=0.9, pad=0.02)
        cbar.set_label(f"colour: {_axis_label(spec, spec.sweep or '')}")
        levels = sorted({c for c in colour or [] if math.isfinite(c)})
        if len(levels) <= 10:  # a designed sweep: tick the values it takes
            cbar.set_ticks(levels)
    else:
        handles, names = next((ax.get_legend_handles_labels() for ax in axes[:k]
                               if ax.get_legend_handles_labels()[0]), ([], []))
        if handles:
            fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 6),
                       fontsize=10, frameon=False)
    lower_is_better = any(k in outcome.lower() for k in ("loss", "rmse", "error"))
    trend = ("falling to the right (r, ρ < 0) means higher scores go with lower"
             if lower_is_better else "rising to the right (r, ρ > 0) means higher scores go "
             "with higher")
    title = (f"Does each score predict {spec.label(outcome)}? One panel per score, one point "
             f"per record: a cloud {trend} {spec.label(outcome)}, i.e. better transfer")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 11)), fontsize=12)
    _declutter_labels(fig, labelled)
    return fig


# Candidate label positions around a point: (dx, dy) in points, horizontal and vertical alignment.
# The first ring sits next to the marker; the outer rings, tried only when the first is crowded,
# are joined to their point by a thin leader line.
_UP = (0.0, 7.0, "center", "bottom")
_DOWN = (0.0, -8.0, "center", "top")
_NEAR = [(8.0, 0.0, "left", "center"), (-8.0, 0.0, "right", "center"),
         (5.0, 5.0, "left", "bottom"), (-5.0, 5.0, "right", "bottom"),
         (5.0, -5.0, "left", "top"), (-5.0, -5.0, "right", "top")]
_FAR = [(dx * k, dy * k, ha, va) for k in (2.5, 4.0, 5.5)
        for dx, dy, ha, va in [_UP, _DOWN, *_NEAR]]
_LEADER_FROM = 12.0  # offsets at least this long (points) get a leader line


def _annotate_points(ax: Axes, pts: list[tuple[int, float, float]], spec: _Spec) -> list[Any]:
    """Label each point with its source, alternating above/below in order of x.

    Returns ``[(annotation, x, y, rank)]`` for :func:`_declutter_labels`, which moves labels
    that collide once the figure has been laid out.
    """
    placed = []
    order = sorted(range(len(pts)), key=lambda j: (pts[j][1], pts[j][2]))
    for rank, j in enumerate(order):
        i, x, y = pts[j]
        dx, dy, ha, va = _UP if rank % 2 == 0 else _DOWN
        ann = ax.annotate(_point_label(spec.records[i], i), (x, y), xytext=(dx, dy),
                          textcoords="offset points", ha=ha, va=va, fontsize=7.5,
                          color="0.15", zorder=4,
                          arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6,
                                      "shrinkA": 1.0, "shrinkB": 4.5})
        ann.arrow_patch.set_visible(False)  # leader line only for far positions
        ann.set_in_layout(False)  # layout is fixed first, then labels are moved within it
        placed.append((ann, x, y, rank))
    return placed


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _text_extent(ann: Any, renderer: Any) -> Any:
    """Display-space box of an annotation's text alone (without its leader line)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


_SHIFT = {"left": 0.0, "center": 0.5, "right": 1.0, "bottom": 0.0, "top": 1.0}


def _candidate_box(centre: Any, size: tuple[float, float], cand: tuple[float, float, str, str],
                   points: float) -> Any:
    """The display-space box that a label of ``size`` (width, height in pixels) takes at the
    candidate position ``cand`` (offset in points from ``centre``, then aligned): the text's
    size does not depend on where it is put, so placing it is arithmetic, not a new layout."""
    from matplotlib.transforms import Bbox

    dx, dy, ha, va = cand
    w, h = size
    x0 = centre[0] + dx * points - _SHIFT[ha] * w
    y0 = centre[1] + dy * points - _SHIFT[va] * h
    return Bbox.from_bounds(x0, y0, w, h)


def _declutter_labels(fig: Figure, per_axes: list[tuple[Axes, list[Any]]]) -> None:
    """Greedy label placement: each label takes the first candidate position (its alternating
    default first) that overlaps no marker, no earlier label and stays inside the axes; when
    none is free, the position with the least overlap. Other points' markers are padded so that
    a label never sits closer to a foreign marker than a few pixels (which would misattribute
    it). Each label's text is laid out once; its box at every candidate is computed from that
    size (:func:`_candidate_box`)."""
    from matplotlib.transforms import Bbox

    if not any(labels for _, labels in per_axes):
        return  # nothing to place: the layout runs once, when the figure is saved
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.get_layout_engine().execute(fig)  # the constrained layout alone: positions are final
    radius = 0.5 * math.sqrt(_MARKER_SIZE) * fig.dpi / 72.0 + 1.0
    points = fig.dpi / 72.0
    for ax, labels in per_axes:
        frame = ax.get_window_extent(renderer)
        centres = [ax.transData.transform((x, y)) for _, x, y, _ in labels]
        own = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
               for px, py in centres]
        pad = radius + 6.0
        padded = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in centres]
        taken: list[Any] = []
        for j, (ann, _, _, rank) in enumerate(labels):
            extent = _text_extent(ann, renderer)
            size = (extent.width, extent.height)
            markers = [own[j], *padded[:j], *padded[j + 1:]]
            candidates = ([_UP, _DOWN] if rank % 2 == 0 else [_DOWN, _UP]) + _NEAR + _FAR
            best, best_cost, best_box = candidates[0], math.inf, extent
            for cand in candidates:
                bb = _candidate_box(centres[j], size, cand, points)
                cost = sum(_overlap(bb, o) for o in taken + markers)
                outside = bb.width * bb.height - _overlap(bb, frame)
                cost += 2.0 * outside
                if cost < best_cost:
                    best, best_cost, best_box = cand, cost, bb
                if cost == 0.0:
                    break
            dx, dy, ha, va = best
            ann.xyann = (dx, dy)
            ann.set_horizontalalignment(ha)
            ann.set_verticalalignment(va)
            ann.arrow_patch.set_visible(math.hypot(dx, dy) >= _LEADER_FROM)
            taken.append(best_box)
    # the layout is final (the labels were placed inside it): saving need not lay it out again
    fig.set_layout_engine("none")


def _series(spec: _Spec) -> list[tuple[str, list[int]]] | None:
    """``[(group, record indices)]`` when the design groups the records by something other than
    the sweep (e.g. the runs of the authors' synthetic sweep), so that each group gets its own
    line; None otherwise (or above 10 groups)."""
    if spec.groups is None or spec.groups == spec.sweep:
        return None
    values = [str(r.get(spec.groups)) for r in spec.records]
    order = list(dict.fromkeys(values))
    if not 2 <= len(order) <= 10:
        return None
    return [(g, [i for i, v in enumerate(values) if v == g]) for g in order]


def _sweep_figure(spec: _Spec) -> Figure | None:
    """Outcomes (orange) then metrics (blue) against the sweep key, in a grid of at most three
    columns with a shared x axis."""
    sweep = spec.sweep
    colour = _sweep_values(spec)
    if sweep is None or colour is None:
        return None
    outcomes = [o for o in spec.outcomes if o not in spec.metrics]
    keys = [*outcomes, *spec.metrics]
    if not keys:
        return None
    series = _series(spec)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _new_figure(5.2 * ncols, 2.7 * nrows + 0.9)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
    for index in range(nrows * ncols):
        row, col = divmod(index, ncols)
        ax = axes[row, col]
        if index >= len(keys):
            ax.set_visible(False)
            continue
        key = keys[index]
        kind = "outcome" if key in outcomes else "metric"
        line_colour = "tab:orange" if kind == "outcome" else "tab:blue"
        pairs = sorted((colour[i], _num(r.get(key))) for i, r in enumerate(spec.records)
                       if math.isfinite(colour[i]))
        finite = [(x, v) for x, v in pairs if math.isfinite(v)]
        if finite and series:
            for (name, members), c in zip(series, _target_colours([n for n, _ in series]).values(),
                                          strict=True):
                pts = sorted((colour[i], _num(spec.records[i].get(key))) for i in members
                             if math.isfinite(colour[i]))
                ax.plot([x for x, _ in pts], [v for _, v in pts], "o-", color=c, markersize=4,
                        markeredgecolor="black", markeredgewidth=0.4, linewidth=1.2,
                        label=name)
        elif finite:
            # One marker per record; the line joins the mean at each sweep value, with a
            # gap where no record at that value has this quantity.
            ax.plot([x for x, _ in finite], [v for _, v in finite], "o", color=line_colour,
                    markersize=5, markeredgecolor="black", markeredgewidth=0.5, zorder=3)
            xs = sorted({x for x, _ in pairs})
            means = []
            for x in xs:
                vals = [v for t, v in finite if t == x]
                means.append(sum(vals) / len(vals) if vals else math.nan)
            ax.plot(xs, means, "-", color=line_colour, linewidth=1.5, zorder=2)
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
        ax.set_title(f"{spec.label(key)}  [{kind}]", fontsize=10, loc="left")
        ax.set_ylabel(_axis_label(spec, key), fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.15)
        if index + ncols >= len(keys):  # lowest visible subplot of this column
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(_axis_label(spec, sweep))
        levels = sorted({x for x in colour if math.isfinite(x)})
        if len(levels) <= 10:  # a designed sweep: tick the values it takes
            ax.set_xticks(levels)
    from matplotlib.lines import Line2D

    if series:
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3),
                   fontsize=9, frameon=False, title=spec.label(str(spec.groups)))
        title = (f"How outcomes (first panels) and metrics move along {spec.label(sweep)}, one "
                 f"line per {spec.label(str(spec.groups))}: curves moving together mean the "
                 "metric tracks the outcome")
    else:
        fig.legend([Line2D([], [], marker="o", ls="", color="0.5", markeredgecolor="black"),
                    Line2D([], [], color="tab:orange"), Line2D([], [], color="tab:blue")],
                   ["one record", "outcome: mean at each value", "metric: mean at each value"],
                   loc="outside lower center", ncols=3, fontsize=9, frameon=False)
        title = (f"How outcomes (orange) and metrics (blue) move along {spec.label(sweep)}: "
                 "curves moving together mean the metric tracks the outcome")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 11)), fontsize=12)
    return fig


def _tau_figure(spec: _Spec, tau: Mapping[str, Mapping[str, Any]]) -> Figure | None:
    """Model selection's headline table as a chart: one row per method (best mean on top), a
    bar per target task (coloured as in the scatter plots) and the mean as a black diamond."""
    methods = [m for m in tau if isinstance(tau[m], Mapping)]
    targets = list(dict.fromkeys(t for m in methods for t in tau[m] if t != "mean"))
    if not methods or not targets:
        return None
    methods.sort(key=lambda m: _num(tau[m].get("mean")) if _finite(tau[m].get("mean"))
                 else -math.inf)
    colours = _target_colours(targets)
    # long method labels wrap onto two lines and widen the figure rather than push the plot out
    labels = [textwrap.fill(spec.label(m), 34) for m in methods]
    longest = max(len(line) for label in labels for line in label.splitlines())
    fig = _new_figure(5.6 + 0.075 * longest,
                      1.4 + 0.42 * len(methods) * max(1.0, len(targets) / 3))
    ax = fig.subplots()
    height = 0.8 / len(targets)
    for j, t in enumerate(targets):
        ys = [i + 0.4 - height * (j + 0.5) for i in range(len(methods))]  # first on top
        ax.barh(ys, [_num(tau[m].get(t)) for m in methods], height=height * 0.95,
                color=colours[t], edgecolor="black", linewidth=0.4, label=f"target {t}")
    ax.plot([_num(tau[m].get("mean")) for m in methods], range(len(methods)), "D",
            color="black", markersize=6, label="mean over targets", zorder=3)
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_yticks(range(len(methods)), labels, fontsize=9)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("weighted Kendall tau vs fine-tuning accuracy\n(unitless, −1 to 1)")
    ax.set_ylabel("method")
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=min(len(targets) + 1, 5), fontsize=9,
               frameon=False)
    ax.set_title("Which method ranks the candidate sources\nas fine-tuning does? Longer bars "
                 "to the\nright are better; best mean on top", fontsize=11)
    return fig


def _cell_format(values: Any) -> str:
    """One number format for every cell of a heatmap (two decimals unless that hides values)."""
    nonzero = [abs(float(v)) for v in values if v != 0]
    if nonzero and (min(nonzero) < 0.01 or max(nonzero) >= 1000):
        return ".2g"
    return ".2f"


def _matrix_figure(spec: _Spec, name: str, names: list[str], values: list[list[Any]]) -> Figure:
    import numpy as np
    from matplotlib import colormaps

    n = len(names)
    arr = np.array([[_num(v) for v in row] for row in values], dtype=float).reshape(n, n)
    data = np.ma.masked_invalid(arr)
    longest = max((len(s) for s in names), default=1)
    side = max(4.8, 0.7 * n + 2.4 + 0.06 * longest)
    fig = _new_figure(side + 1.2, side)
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    finite = arr[np.isfinite(arr)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
    fontsize = max(6.0, min(11.0, 80.0 / max(n, 1)))
    fmt = _cell_format(finite)
    for i in range(n):
        for j in range(n):
            v = arr[i, j]
            if math.isfinite(v):
                r, g, b, _ = cmap((v - vmin) / (vmax - vmin))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                        color="black" if light else "white")
            else:
                ax.text(j, i, _DASH, ha="center", va="center", fontsize=fontsize, color="0.3")
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    if longest > 3:
        ax.tick_params(axis="x", labelrotation=40)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
            lab.set_rotation_mode("anchor")
    ax.set_xlabel("victim (model the attack is applied to)")
    ax.set_ylabel("attacker (model the attack is crafted on)")
    label = spec.label(name)
    ax.set_title(f"{label}: brighter cells = attacks that transfer more\n(row: attacker, "
                 "column: victim; — undefined)", fontsize=11)
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label(f"colour: {_axis_label(spec, name)}")
    return fig


# ----------------------------------------------------------------------------------------------
# Document model rendered to Markdown and HTML
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    kind: str  # "h1", "h2", "p", "md", "ul", "table", "img"
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    right: tuple[bool, ...] = ()


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]],
             right: Sequence[bool] | None = None) -> str:
    """A Markdown table, the one builder of every table in reports and run descriptions:
    ``right[i]`` right-aligns column ``i`` (default: every column but the first); cells are
    escaped (``|`` and newlines)."""
    right = [i > 0 for i in range(len(header))] if right is None else list(right)
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _render_md(blocks: list[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind in ("p", "md"):
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            out.append(md_table(b.header, b.rows, b.right))
        elif b.kind == "img":
            alt = b.text.replace("[", "(").replace("]", ")")
            out.append(f"![{alt}]({b.items[0]})\n\n*{b.text}*")
    return "\n\n".join(out) + "\n"


@functools.cache
def _markdown() -> MarkdownIt:
    """The one Markdown parser of report pages: CommonMark plus GFM pipe tables and
    strikethrough (markdown-it-py), with raw HTML off (``<`` and ``&`` in the text are escaped,
    never passed through) and HTML5 void tags (``<img>``, not ``<img />``). Built on first use:
    importing this module does not import markdown-it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "xhtmlOut": False}).enable(
        ["table", "strikethrough"])


def _md_to_html(text: str) -> str:
    """Markdown written by a recipe (a report's description: paragraphs, ``code``, **bold**,
    links, images, pipe tables whose cells may hold ``\\|``) as HTML. Links with an unsafe
    scheme (``javascript:``, ...) stay text (markdown-it's ``validateLink``)."""
    return _markdown().render(text).strip()


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .3em .6em; white-space: nowrap; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; }
""".strip()


def _render_html(blocks: list[_Block], title: str) -> str:
    """The blocks as one standalone HTML page (inline CSS, relative image paths).

    Headings, paragraphs, lists, tables and figure captions hold text from the results (model
    names, labels, notes): they are escaped as plain text, so ``<``, ``&`` and ``*`` show as
    written, and numeric columns get ``class="num"``. Only ``md`` blocks, the Markdown a
    recipe wrote (its description), go through :func:`_md_to_html`."""
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "md":
            body.append(_md_to_html(b.text))
        elif b.kind == "ul":
            items = "".join(f"<li>{esc(item)}</li>" for item in b.items)
            body.append(f"<ul>{items}</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = []
            for row in b.rows:
                cells = "".join(
                    f'<td class="num">{esc(c)}</td>' if r else f"<td>{esc(c)}</td>"
                    for c, r in zip(row, b.right, strict=True))
                rows.append(f"<tr>{cells}</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                        "</tbody></table>")
        elif b.kind == "img":
            src = esc(b.items[0], quote=True)
            body.append(f'<figure><img src="{src}" alt="{esc(b.text, quote=True)}">'
                        f"<figcaption>{esc(b.text)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _run_items(results: Mapping[str, Any]) -> list[str]:
    items = []
    for key, name in (("recipe", "Recipe"), ("seed", "Seed"), ("device", "Device")):
        if results.get(key) is not None:
            items.append(f"{name}: {results[key]}")
    versions = results.get("versions")
    if isinstance(versions, Mapping) and versions:
        items.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    wall = results.get("wall_time_s")
    if _finite(wall):
        items.append(f"Wall time: {_fmt_seconds(float(wall))}")
    if results.get("config") is not None:
        items.append("Full configuration: in the run's results.json")
    return items


def _records_table(spec: _Spec) -> _Block:
    if spec.columns is not None:
        cols = spec.columns
    else:
        cols = list(dict.fromkeys(k for r in spec.records for k in r))
    right = tuple(
        all(r.get(c) is None or _is_number(r.get(c)) for r in spec.records)
        and any(_is_number(r.get(c)) for r in spec.records)
        for c in cols)
    rows = tuple(tuple(_fmt_value(r.get(c)) for c in cols) for r in spec.records)
    return _Block("table", header=tuple(cols), rows=rows, right=right)


def _correlation_table(rows: list[dict[str, Any]],
                       names: tuple[str, str] = ("metric", "outcome")) -> _Block:
    conf = next((float(r["confidence"]) for r in rows if _finite(r.get("confidence"))), 0.95)
    ci = f"[{conf * 100:g}% CI]"
    header = (*names, "n", f"Pearson r {ci}", "p", f"Spearman ρ {ci}", "p")
    body = tuple(
        (str(r["metric"]), str(r["outcome"]), str(r.get("n")),
         _fmt_r_ci(r, "pearson_r", "pearson_ci_low", "pearson_ci_high"),
         _fmt_p(r.get("pearson_p")) if _finite(r.get("pearson_r")) else _DASH,
         _fmt_r_ci(r, "spearman_rho", "spearman_ci_low", "spearman_ci_high"),
         _spearman_p_cell(r))
        for r in rows)
    return _Block("table", header=header, rows=body,
                  right=(False, False, True, True, True, True, True))


def _spearman_p_cell(r: Mapping[str, Any]) -> str:
    if not _finite(r.get("spearman_rho")):
        return _DASH
    text = _fmt_p(_spearman_p(r))
    return f"{text} (exact)" if _finite(r.get("spearman_p_exact")) else text


def _sign_word(v: float) -> str:
    return "positive" if v > 0 else "negative" if v < 0 else "zero"


@dataclass(frozen=True)
class _Evidence:
    """One correlation statistic with its p-value and bootstrap interval."""

    name: str  # "Pearson", "Spearman" or "" (the only statistic)
    symbol: str
    est: Any
    p: Any
    low: Any
    high: Any
    confidence: float
    p_kind: str = ""  # "exact", "permutation", ... shown after the p-value

    def detail(self) -> str:
        p_kind = f" ({self.p_kind})" if self.p_kind else ""
        name = f"{self.name} " if self.name else ""
        text = f"{name}{self.symbol} = {_fmt_r(self.est)}, p {_p_eq(self.p)}{p_kind}, "
        if _finite(self.low) and _finite(self.high):
            return text + (f"{self.confidence * 100:g}% CI [{float(self.low):.2f}, "
                           f"{float(self.high):.2f}]")
        return text + "no interval"

    def verdict(self) -> tuple[str, str]:
        """``("clear" | "none" | "inconclusive", why)``.

        The one rule of the honest reading: a correlation is clear only when p < 5% AND the
        bootstrap interval excludes 0 on the side of the estimate; it is not clear ("none") when
        p >= 5% and the interval includes 0 (or there is no interval); any other combination is
        inconclusive and ``why`` says which of the two disagrees.
        """
        small_p = _finite(self.p) and float(self.p) < _ALPHA
        p_text = f"p {_p_eq(self.p)}"
        if not (_finite(self.low) and _finite(self.high)):
            if small_p:
                return "inconclusive", f"{p_text} but there is no bootstrap interval"
            return "none", ""
        low, high = float(self.low), float(self.high)
        side = 1 if low > 0 else -1 if high < 0 else 0
        sign = (float(self.est) > 0) - (float(self.est) < 0) if _finite(self.est) else 0
        interval = f"the {self.confidence * 100:g}% interval [{low:.2f}, {high:.2f}]"
        if side == 0:
            return ("inconclusive", f"{p_text} but {interval} includes 0") if small_p else (
                "none", "")
        if side != sign:
            return "inconclusive", f"{interval} lies on the other side of 0 from the estimate"
        if small_p:
            return "clear", ""
        return "inconclusive", f"{interval} excludes 0 but {p_text}"


def _overall(evidence: Sequence[_Evidence]) -> str:
    """"clear" (every statistic clear, one sign), "none" (every one not clear), else
    "inconclusive"."""
    kinds = {e.verdict()[0] for e in evidence}
    if kinds == {"clear"}:
        return "clear" if len({_sign_word(float(e.est)) for e in evidence}) == 1 else (
            "inconclusive")
    return "none" if kinds == {"none"} else "inconclusive"


def _reading(evidence: Sequence[_Evidence]) -> str:
    """The verdict of :func:`_overall` in words, saying why when inconclusive."""
    overall = _overall(evidence)
    if overall == "clear":
        return f"clear {_sign_word(float(evidence[0].est))} correlation"
    if overall == "none":
        return "no clear correlation"
    verdicts = [e.verdict() for e in evidence]
    if all(kind == "clear" for kind, _ in verdicts):
        return "inconclusive (the statistics disagree in sign)"
    if len(evidence) == 1:
        return f"inconclusive ({verdicts[0][1]})"
    states = {"clear": " clear", "none": " not clear"}
    return "inconclusive (" + "; ".join(
        f"{e.name}{states.get(kind) or ': ' + reason}"
        for e, (kind, reason) in zip(evidence, verdicts, strict=True)) + ")"


def _pooled_evidence(r: Mapping[str, Any]) -> tuple[_Evidence, _Evidence]:
    conf = float(r.get("confidence") or 0.95)
    return (
        _Evidence("Pearson", "r", r.get("pearson_r"), r.get("pearson_p"),
                  r.get("pearson_ci_low"), r.get("pearson_ci_high"), conf),
        _Evidence("Spearman", "ρ", r.get("spearman_rho"), _spearman_p(r),
                  r.get("spearman_ci_low"), r.get("spearman_ci_high"), conf,
                  "exact" if _finite(r.get("spearman_p_exact")) else ""))


def _honest_line(r: Mapping[str, Any]) -> str:
    """The verdict of one pooled correlation under the rule of :meth:`_Evidence.verdict`
    applied to Pearson and Spearman, with every number it rests on."""
    head = f"{r['metric']} vs {r['outcome']}"
    n = r.get("n")
    pr, sr = r.get("pearson_r"), r.get("spearman_rho")
    if not (_finite(pr) and _finite(sr)):
        reason = str(r.get("note") or "not enough data")
        return f"{head}: no reading, correlation undefined (n = {n}): {reason}."
    evidence = _pooled_evidence(r)
    details = "; ".join(e.detail() for e in evidence)
    return f"{head}: {_reading(evidence)}. n = {n}; {details}."


def _within_evidence(w: Mapping[str, Any]) -> _Evidence:
    return _Evidence("", "r_w", w.get("r"), w.get("p"), w.get("ci_low"),
                     w.get("ci_high"), float(w.get("confidence") or 0.95), "permutation")


def _within_line(w: Mapping[str, Any], group: str) -> str:
    """The verdict of one within-group correlation (same rule as the pooled ones)."""
    head = f"{w['metric']} vs {w['outcome']} within equal {group}"
    if not _finite(w.get("r")):
        return f"{head}: no reading: {w.get('note') or 'not enough data'}."
    ev = _within_evidence(w)
    line = (f"{head}: {_reading([ev])}. n = {w.get('n')} in {w.get('groups')} groups; "
            f"{ev.detail()}")
    p, p_t = w.get("p"), w.get("p_t")
    if _finite(p) and _finite(p_t) and (float(p) < _ALPHA) != (float(p_t) < _ALPHA):
        line += (f"; the t test, which assumes normal residuals of equal spread in every "
                 f"group, gives p {_p_eq(p_t)}")
    return line + "."


def _group_means_table(spec: _Spec, summary: list[dict[str, Any]]) -> _Block:
    keys = list(dict.fromkeys([*spec.outcomes, *spec.metrics]))

    def cell(st: Mapping[str, Any]) -> str:
        if not _finite(st.get("mean")):
            return _DASH
        sd = f" ± {float(st['sd']):.2g}" if _finite(st.get("sd")) else ""
        return f"{float(st['mean']):.4g}{sd}"

    rows = tuple((_fmt_value(g["group"]), str(g["n"]), *(cell(g["stats"][k]) for k in keys))
                 for g in summary)
    return _Block("table", header=(str(spec.groups), "n", *keys), rows=rows,
                  right=(True,) * (len(keys) + 2))


def _within_table(rows: list[dict[str, Any]]) -> _Block:
    conf = next((float(r["confidence"]) for r in rows if _finite(r.get("confidence"))), 0.95)
    header = ("metric", "outcome", "n", "groups", f"within-group r_w [{conf * 100:g}% CI]",
              "p (permutation)", "p (t test, df)")
    body = tuple(
        (str(w["metric"]), str(w["outcome"]), str(w.get("n")), str(w.get("groups")),
         _fmt_r_ci(w, "r", "ci_low", "ci_high"),
         _fmt_p(w.get("p")) if _finite(w.get("r")) else _DASH,
         f"{_fmt_p(w.get('p_t'))} (df {w.get('df')})" if _finite(w.get("r")) else _DASH)
        for w in rows)
    return _Block("table", header=header, rows=body,
                  right=(False, False, True, True, True, True, True))


def _brief(ev: _Evidence) -> str:
    """``r = 0.96 [0.93, 0.98], p < 0.001`` (interval when there is one)."""
    ci = (f" [{float(ev.low):.2f}, {float(ev.high):.2f}]"
          if _finite(ev.low) and _finite(ev.high) else "")
    return f"{ev.symbol} = {_fmt_r(ev.est)}{ci}, p {_p_eq(ev.p)}"


def _listing(items: list[tuple[str, _Evidence]]) -> str:
    return "; ".join(f"{name} ({_brief(ev)})" for name, ev in items)


def _clear(rows: list[dict[str, Any]], outcome: str, key: str, stat: str = "pearson_r",
           within: bool = False) -> list[str]:
    """``rows[i][key]`` of the rows for ``outcome`` whose reading is clear."""
    def kind(r: Mapping[str, Any]) -> str:
        return _overall([_within_evidence(r)] if within else _pooled_evidence(r))

    return [str(r[key]) for r in rows
            if r["outcome"] == outcome and _finite(r.get(stat)) and kind(r) == "clear"]


def _in_short(spec: _Spec, design: list[dict[str, Any]], pooled: list[dict[str, Any]],
              within: list[dict[str, Any]]) -> str:
    """One plain sentence on the first outcome, from the same verdicts as the lists."""
    group = spec.label(str(spec.groups))
    outcome = spec.outcomes[0]
    label = spec.label(outcome)
    driven = [str(r["outcome"]) for r in design if r["outcome"] in spec.metrics
              and _finite(r.get("pearson_r")) and _overall(_pooled_evidence(r)) == "clear"]
    parts = []
    if driven and _clear(design, outcome, "outcome"):
        what = "the metrics" if len(driven) == len(spec.metrics) else ", ".join(driven)
        parts.append(f"the {group} moves both {what} and {label}"
                     + (", so they correlate when pooled over all sources"
                        if _clear(pooled, outcome, "metric") else ""))
    inside = _clear(within, outcome, "metric", stat="r", within=True)
    if not any(w["outcome"] == outcome and _finite(w.get("r")) for w in within):
        parts.append(f"with too few sources per {group}, nothing is measured at a fixed {group}")
    elif inside:
        verb = "tracks" if len(inside) == 1 else "track"
        parts.append(f"at a fixed {group}, {', '.join(inside)} still {verb} {label}")
    else:
        parts.append(f"at a fixed {group}, no metric clearly tracks {label}, so this run gives "
                     f"no evidence that the metrics predict {label} beyond the {group}")
    return f"In short, for {label}: " + "; ".join(parts) + "."


def _shows(spec: _Spec, n: int, design: list[dict[str, Any]], pooled: list[dict[str, Any]],
           within: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """What the run shows and what it does not, each sentence derived from the verdicts of the
    honest reading (so it says whatever the numbers say)."""
    group = spec.label(str(spec.groups))
    shows: list[str] = []
    not_shown: list[str] = []
    by_kind: dict[str, list[tuple[str, _Evidence]]]
    if design:
        for keys, what in ((spec.metrics, "The metrics"), (spec.outcomes, "The outcomes")):
            by_kind = {"clear": [], "none": [], "inconclusive": []}
            for r in design:
                if r["outcome"] in keys and _finite(r.get("pearson_r")):
                    ev = _pooled_evidence(r)
                    name = str(r["outcome"])
                    by_kind[_overall(ev)].append(
                        (spec.label(name) if name in spec.outcomes else name, ev[0]))
            if by_kind["clear"]:
                other = by_kind["none"] + by_kind["inconclusive"]
                shows.append(f"{what} follow the designed {group}: clear correlation with it for "
                             f"{_listing(by_kind['clear'])}"
                             + (f"; not clear for {', '.join(k for k, _ in other)}"
                                if other else "") + ".")
    for outcome in spec.outcomes:
        label = spec.label(outcome)
        clear = [(str(r["metric"]), _pooled_evidence(r)[0]) for r in pooled
                 if r["outcome"] == outcome and _finite(r.get("pearson_r"))
                 and _overall(_pooled_evidence(r)) == "clear"]
        if clear:
            shows.append(f"Pooled over all {n} sources, clear correlation with {label} for "
                         f"{_listing(clear)}.")
        by_kind = {"clear": [], "none": [], "inconclusive": []}
        undefined = []
        for w in within:
            if w["outcome"] == outcome and _finite(w.get("r")):
                ev = _within_evidence(w)
                by_kind[_overall([ev])].append((str(w["metric"]), ev))
            elif w["outcome"] == outcome:
                undefined.append(w)
        if undefined and not any(by_kind.values()):
            not_shown.append(f"Whether the metrics say anything about {label} beyond the "
                             f"{group}: no within-group correlation could be computed "
                             f"({str(undefined[0].get('note') or 'not enough data')}).")
        if by_kind["clear"]:
            shows.append(f"Within groups of equal {group}, clear correlation with {label} for "
                         f"{_listing(by_kind['clear'])}: in this run "
                         + ("this metric carries" if len(by_kind["clear"]) == 1 else
                            "these metrics carry")
                         + f" information on {label} beyond the {group}.")
        other = [f"no clear correlation for {_listing(by_kind['none'])}"] if by_kind[
            "none"] else []
        if by_kind["inconclusive"]:
            other.append(f"inconclusive for {_listing(by_kind['inconclusive'])}")
        if other:
            names = [k for k, _ in by_kind["none"] + by_kind["inconclusive"]]
            not_shown.append(f"That {', '.join(names)} predict {label} beyond what the {group} "
                             f"explains: within groups of equal {group}, "
                             + "; ".join(other) + ".")
    not_shown.append(f"Causation, or anything about models, data or designs not in this run: "
                     f"every correlation here is an association across these {n} sources.")
    return shows, not_shown


def _within_blocks(spec: _Spec, corr_rows: list[dict[str, Any]], *, n_boot: int, seed: int,
                   confidence: float) -> tuple[list[_Block], list[_Block], list[str],
                                               dict[str, Any]]:
    """The within-group section, the shows / does-not-show section, the honest-reading lines
    and the JSON of ``groups.json``.

    Adds each within-group result to its pooled row as ``row["within"]``.
    """
    group = str(spec.groups)
    label = spec.label(group)
    keys = list(dict.fromkeys([*spec.outcomes, *spec.metrics]))
    summary = group_summary(spec.records, group, keys)
    numeric = all(r.get(group) is None or _is_number(r.get(group)) for r in spec.records)
    design = correlation_table(spec.records, [group], keys, n_boot=n_boot, seed=seed,
                               confidence=confidence) if numeric else []
    within = within_group_table(spec.records, spec.metrics, spec.outcomes, group,
                                n_boot=n_boot, seed=seed, confidence=confidence)
    for row, w in zip(corr_rows, within, strict=True):
        row["within"] = {k: v for k, v in w.items() if k not in ("metric", "outcome")}
    n = len(spec.records)
    blocks = [
        _Block("h2", text=f"Within groups of equal {label}"),
        _Block("p", text=(
            f"The sources come in groups of equal {label} ({group}), set by the design. When "
            f"the {label} drives both a metric and an outcome, their pooled correlation above "
            f"can be carried by the design alone. Per-group means (each cell: mean ± sample "
            f"standard deviation over the group's records):")),
        _group_means_table(spec, summary),
    ]
    if design:
        blocks += [_Block("p", text=(
            f"Correlation of the design variable {group} with each metric and outcome "
            "(same tests and intervals as above):")),
                   _correlation_table(design, ("design variable", "metric or outcome"))]
    blocks += [
        _Block("p", text=(
            f"Within-group correlation r_w: the Pearson correlation of the values after "
            f"subtracting each group's mean, i.e. the partial correlation given {group} as a "
            f"category. p (permutation): the outcome permuted within each group "
            f"({within[0]['n_perm'] if within else 0} permutations); p (t test): t = r_w "
            f"sqrt(df / (1 − r_w²)) with df = n − groups − 1, which assumes normal residuals "
            f"of equal spread in every group: when one group's spread dominates the two "
            f"p-values can differ, and the reading below uses the permutation one. Intervals: "
            f"stratified percentile bootstrap (each group resampled within itself, {n_boot} "
            f"resamples).")),
        _within_table(within),
    ]
    shows, not_shown = _shows(spec, n, design, corr_rows, within)
    verdict = [_Block("h2", text="What this run shows and does not show"),
               _Block("p", text=_in_short(spec, design, corr_rows, within)),
               _Block("p", text="Shows:"), _Block("ul", items=tuple(shows or ["nothing clear"])),
               _Block("p", text="Does not show:"), _Block("ul", items=tuple(not_shown))]
    lines = [_within_line(w, label) for w in within]
    return blocks, verdict, lines, {"group": group, "summary": summary, "design": design,
                           "within": within}


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def write_report(results: Mapping[str, Any], out_dir: str | Path, *, n_boot: int = 2000,
                 bootstrap_seed: int = 0, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Write ``results.csv``, ``correlations.json``, ``figures/*.png``, ``report.md`` and
    ``report.html`` under ``out_dir`` (created), each file atomically.

    Args:
        results: the run's results dictionary (``records`` and ``report`` are required;
            ``recipe``, ``seed``, ``device``, ``versions``, ``wall_time_s`` and ``matrices`` are
            used when present). ``None`` values are missing data: skipped in correlations and
            plots, shown as "—" in tables.
        out_dir: output directory.
        n_boot, bootstrap_seed, confidence: passed to :func:`advtransfer.stats.correlation`.

    Returns:
        The correlation rows from :func:`advtransfer.stats.correlation_table` (one per
        (metric, outcome), JSON-ready), also written to ``correlations.json``.

    Raises:
        AdvTransferError: if ``results`` is malformed (checked before anything is written).
    """
    spec = _parse(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # results.csv
    cols = list(dict.fromkeys(k for r in spec.records for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in spec.records:
        writer.writerow([_csv_cell(r.get(c)) for c in cols])
    atomic_write_text(out / "results.csv", buf.getvalue())

    # correlations
    corr_rows = correlation_table(spec.records, spec.metrics, spec.outcomes, n_boot=n_boot,
                                  seed=bootstrap_seed, confidence=confidence)
    within_section: list[_Block] = []
    verdict: list[_Block] = []
    within_lines: list[str] = []
    if spec.groups is not None and corr_rows:
        within_section, verdict, within_lines, groups_json = _within_blocks(
            spec, corr_rows, n_boot=n_boot, seed=bootstrap_seed, confidence=confidence)
        write_json(out / "groups.json", groups_json)
    write_json(out / "correlations.json", corr_rows)
    by_pair = {(r["metric"], r["outcome"]): r for r in corr_rows}

    # figures
    figures: list[tuple[str, str]] = []
    used: set[str] = set()

    def save(fig: Figure | None, stem: str, caption: str) -> None:
        if fig is None:
            return
        name = _slug(stem)
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        rel = f"figures/{name}.png"
        atomic_write_bytes(out / rel, _png_bytes(fig))
        fig.clear()
        figures.append((rel, caption))

    if spec.metrics:
        for outcome in spec.outcomes:
            caption = (f"{spec.label(outcome)} against each transferability metric; one point "
                       "per record" + (", labelled by source" if len(spec.records)
                                       <= MAX_LABELLED_POINTS else
                                       f" (more than {MAX_LABELLED_POINTS}: unlabelled, see "
                                       "the records table)"))
            if _sweep_values(spec) is not None:
                caption += f", coloured by {spec.label(spec.sweep or '')}"
            if spec.groups is not None:
                caption += (f"; each title also gives the correlation within groups of equal "
                            f"{spec.label(spec.groups)} (r_w)")
            save(_scatter_figure(spec, outcome, by_pair), f"scatter_{outcome}", caption + ".")
    skipped: list[str] = []
    if spec.sweep is not None and _sweep_values(spec) is None:
        skipped.append(f"No sweep figure and no colouring: {spec.sweep!r} has no finite "
                       "numeric value in any record.")
    if spec.sweep is not None:
        save(_sweep_figure(spec), f"sweep_{spec.sweep}",
             f"Each metric and outcome as a function of {spec.label(spec.sweep)} (markers: "
             "records; line: mean at each value; a gap marks missing values).")
    for mname, (names, values) in spec.matrices.items():
        save(_matrix_figure(spec, mname, names, values), f"matrix_{mname}",
             f"{spec.label(mname)}: rows are attackers (adversarial examples crafted on), "
             "columns are victims (evaluated on).")
    tau = (results.get("selection") or {}).get("weighted_tau")
    if isinstance(tau, Mapping) and tau:
        save(_tau_figure(spec, tau), "selection_weighted_tau",
             "Weighted Kendall tau of each method's ranking of the candidates against their "
             "fine-tuning accuracy, per target task (bars) and mean (diamonds).")
    # figures a recipe drew itself into the run directory: [relative path, caption] pairs
    for rel, caption in results.get("report", {}).get("extra_figures", []):
        if (out / rel).is_file():
            figures.append((str(rel), str(caption)))
        else:
            skipped.append(f"The recipe's figure {rel} is missing.")

    # document
    blocks: list[_Block] = [_Block("h1", text=spec.title)]
    if verdict:  # the report opens on its conclusion; the evidence follows
        blocks += [_Block("h2", text="In short"), verdict[1],
                   _Block("p", text="The evidence and what the run does not show: the sections "
                                    "below, ending with “What this run shows and does not "
                                    "show”.")]
    if spec.description.strip():
        if verdict:
            blocks.append(_Block("h2", text="Design"))
        blocks.append(_Block("md", text=spec.description.strip()))
    run = _run_items(results)
    if run:
        blocks += [_Block("h2", text="Run"), _Block("ul", items=tuple(run))]
    blocks += [_Block("h2", text="Records"),
               _Block("p", text=f"{len(spec.records)} record(s), one per source model; numbers "
                                "to 4 significant digits, — marks a missing value. All values "
                                "at full precision: results.csv.")]
    if spec.records:
        blocks.append(_records_table(spec))
    if corr_rows:
        k = len(corr_rows)
        blocks += [
            _Block("h2", text="Correlations"),
            _Block("p", text=(
                "Pearson r and Spearman ρ across source models with two-sided p-values "
                "(null hypothesis: no correlation). Pearson p: t test (scipy). Spearman p: "
                "exact permutation test, marked (exact), when n ≤ "
                f"{EXACT_SPEARMAN_MAX_N}; otherwise scipy's t approximation. Intervals: "
                f"percentile bootstrap over {n_boot} resamples of the records (seed "
                f"{bootstrap_seed}); with few records they are rough and can collapse to a "
                "point. The p-values are not corrected for the "
                f"{k} comparisons in this table.")),
            _correlation_table(corr_rows),
        ]
        notes = [f"{r['metric']} vs {r['outcome']}: {r['note']}" for r in corr_rows
                 if r.get("note")]
        if notes:
            blocks += [_Block("p", text="Notes:"), _Block("ul", items=tuple(notes))]
        conf = f"{confidence * 100:g}%"
        blocks += [
            *within_section,
            _Block("h2", text="Honest reading"),
            _Block("p", text=(
                f"One rule for every correlation above: it is called clear only when its "
                f"p-value is below {_ALPHA:g} AND its {conf} bootstrap interval excludes 0 (on "
                f"the side of the estimate), for Pearson and Spearman alike; no clear "
                f"correlation when neither holds; inconclusive when the p-value and the "
                f"interval disagree, and the line says which. Each is an association across "
                f"these source models only: it does not show causation, and says nothing "
                f"about models or data not in this run.")),
            _Block("ul", items=tuple(_honest_line(r) for r in corr_rows)),
        ]
        if within_lines:
            blocks += [_Block("p", text=f"Within groups of equal {spec.label(str(spec.groups))}"
                                        " (same rule, permutation p-value):"),
                       _Block("ul", items=tuple(within_lines))]
        blocks += verdict
    if figures or skipped:
        blocks.append(_Block("h2", text="Figures"))
        blocks += [_Block("img", text=caption, items=(rel,)) for rel, caption in figures]
        if skipped:
            blocks.append(_Block("ul", items=tuple(skipped)))

    atomic_write_text(out / "report.md", _render_md(blocks))
    atomic_write_text(out / "report.html", _render_html(blocks, spec.title))
    return corr_rows
