"""The figures of a report, drawn on :class:`matplotlib.figure.Figure` objects rendered by the
Agg canvas, without pyplot: scatter plots of each outcome against every metric (points labelled
by source and decluttered), curves along the sweep, transfer-matrix heatmaps and model
selection's weighted-tau chart. Importing this module does not import matplotlib."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advtransfer.report.formatting import _DASH, _finite, _fmt_r, _num, _p_eq, _spearman_p
from advtransfer.report.spec import _Spec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    #: What places a scatter figure's point labels: ``(figure, [(axes, labels)])``.
    Declutter = Callable[[Figure, list[tuple[Axes, list[Any]]]], None]

_DPI = 120
_MARKER_SIZE = 55.0  # scatter marker area in points^2


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



@dataclass(frozen=True)
class _ScatterColours:
    """How a scatter figure colours its points: by the sweep value of each record (``values``,
    mapped by ``cmap`` through ``norm``), else by target task (``groups``, coloured by
    ``colours``) when the records span several targets, else all alike."""

    values: list[float] | None
    norm: Any
    cmap: Any
    groups: list[tuple[str, list[int]]] | None
    colours: dict[str, Any]


def _scatter_colours(spec: _Spec) -> _ScatterColours:
    """The colouring of :class:`_ScatterColours`; the colour scale spans the finite sweep
    values (one unit wide when they are all equal)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    colour = _sweep_values(spec)
    groups = None if colour else _target_groups(spec)
    colours = _target_colours([t for t, _ in groups]) if groups else {}
    norm = None
    if colour:
        finite_c = [c for c in colour if math.isfinite(c)]
        lo, hi = min(finite_c), max(finite_c)
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
    return _ScatterColours(values=colour, norm=norm, cmap=colormaps["viridis"], groups=groups,
                           colours=colours)


def _scatter_figure(spec: _Spec, outcome: str, corr: Mapping[tuple[str, str], Mapping[str, Any]],
                    declutter: Declutter | None = None) -> Figure:
    """``outcome`` against each metric, one panel per metric (at most three columns), one point
    per record that has both values; the key is a colour bar for the sweep or a legend.

    ``declutter`` places the point labels once the figure is laid out (default
    :func:`_declutter_labels`): :func:`advtransfer.report.write_report` passes the one it
    holds, so that a test tier can skip the layout by replacing it there."""
    k = len(spec.metrics)
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    style = _scatter_colours(spec)
    fig = _new_figure(5.4 * ncols + (1.0 if style.values else 0.0), 4.9 * nrows + 0.9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    mappable = None
    labelled: list[tuple[Axes, list[Any]]] = []
    for ax, metric in zip(axes, spec.metrics, strict=False):
        drawn, labels = _scatter_panel(ax, spec, metric, outcome, corr, style)
        mappable = drawn if drawn is not None else mappable
        if labels is not None:
            labelled.append((ax, labels))
    for ax in axes[k:]:
        ax.set_visible(False)
    _scatter_key(fig, axes[:k], mappable, spec, style.values)
    _scatter_title(fig, spec, outcome)
    (declutter or _declutter_labels)(fig, labelled)
    return fig


def _scatter_panel(ax: Axes, spec: _Spec, metric: str, outcome: str,
                   corr: Mapping[tuple[str, str], Mapping[str, Any]], style: _ScatterColours,
                   ) -> tuple[Any, list[Any] | None]:
    """One metric's panel: axis labels with units, the correlation as title, the points
    (:func:`_scatter_points`) and their labels when there are at most
    :data:`MAX_LABELLED_POINTS` records. Returns the colour-mapped points (or None) and the
    labels for :func:`_declutter_labels` (None when unlabelled)."""
    pts = [(i, _num(r.get(metric)), _num(r.get(outcome))) for i, r in enumerate(spec.records)]
    pts = [(i, x, y) for i, x, y in pts if math.isfinite(x) and math.isfinite(y)]
    ax.set_xlabel(textwrap.fill(_axis_label(spec, metric), 48))
    ax.set_ylabel(_axis_label(spec, outcome))
    ax.set_title(_corr_title(corr[(metric, outcome)]), fontsize=10)
    ax.grid(True, alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no record has both values", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
        return None, None
    mappable = _scatter_points(ax, spec, pts, style)
    labels = None
    if len(spec.records) <= MAX_LABELLED_POINTS:
        labels = _annotate_points(ax, pts, spec)
    ax.margins(x=0.15, y=0.2)
    return mappable, labels


def _scatter_points(ax: Axes, spec: _Spec, pts: list[tuple[int, float, float]],
                    style: _ScatterColours) -> Any:
    """The markers of ``pts`` (record index, x, y), coloured as ``style`` says (grey, with a
    legend entry, for records without a sweep value). Returns the colour-mapped markers, or
    None when nothing is colour-mapped."""
    mappable = None
    xs = [x for _, x, _ in pts]
    ys = [y for _, _, y in pts]
    if style.values and style.norm is not None:
        cs = [style.values[i] for i, _, _ in pts]
        have = [math.isfinite(c) for c in cs]
        if any(have):
            mappable = ax.scatter([x for x, h in zip(xs, have, strict=True) if h],
                                  [y for y, h in zip(ys, have, strict=True) if h],
                                  c=[c for c, h in zip(cs, have, strict=True) if h],
                                  cmap=style.cmap, norm=style.norm, s=_MARKER_SIZE,
                                  edgecolors="black", linewidths=0.6, zorder=3)
        if not all(have):
            ax.scatter([x for x, h in zip(xs, have, strict=True) if not h],
                       [y for y, h in zip(ys, have, strict=True) if not h],
                       c="0.75", s=_MARKER_SIZE, edgecolors="black", linewidths=0.6, zorder=3,
                       label=f"no {spec.label(spec.sweep or '')}")
            ax.legend(loc="best", fontsize=8, framealpha=0.8)
    elif style.groups:
        for target, members in style.groups:
            keep = [j for j, (i, _, _) in enumerate(pts) if i in members]
            ax.scatter([xs[j] for j in keep], [ys[j] for j in keep], s=_MARKER_SIZE,
                       color=style.colours[target], edgecolors="black", linewidths=0.6, zorder=3,
                       label=f"target {target}")
    else:
        ax.scatter(xs, ys, s=_MARKER_SIZE, color="tab:blue", edgecolors="black", linewidths=0.6,
                   zorder=3, label="one source model")
    return mappable


def _scatter_key(fig: Figure, axes: Any, mappable: Any, spec: _Spec,
                 colour: list[float] | None) -> None:
    """A colour bar for the sweep beside the panels (ticked at the sweep's values when it takes
    at most 10), else the first panel's legend below them."""
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=list(axes), shrink=0.9, pad=0.02)
        cbar.set_label(f"colour: {_axis_label(spec, spec.sweep or '')}")
        levels = sorted({c for c in colour or [] if math.isfinite(c)})
        if len(levels) <= 10:  # a designed sweep: tick the values it takes
            cbar.set_ticks(levels)
    else:
        handles, names = next((ax.get_legend_handles_labels() for ax in axes
                               if ax.get_legend_handles_labels()[0]), ([], []))
        if handles:
            fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 6),
                       fontsize=10, frameon=False)


def _scatter_title(fig: Figure, spec: _Spec, outcome: str) -> None:
    """The question the figure answers, with the direction of a good trend (falling for a
    loss, an RMSE or an error; rising otherwise)."""
    lower_is_better = any(k in outcome.lower() for k in ("loss", "rmse", "error"))
    trend = ("falling to the right (r, ρ < 0) means higher scores go with lower"
             if lower_is_better else "rising to the right (r, ρ > 0) means higher scores go "
             "with higher")
    title = (f"Does each score predict {spec.label(outcome)}? One panel per score, one point "
             f"per record: a cloud {trend} {spec.label(outcome)}, i.e. better transfer")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 11)), fontsize=12)


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
        _sweep_panel(ax, spec, key, "outcome" if key in outcomes else "metric", colour, series,
                     lowest=index + ncols >= len(keys))
    _sweep_key(fig, axes, spec, sweep, series)
    return fig


def _sweep_panel(ax: Axes, spec: _Spec, key: str, kind: str, colour: list[float],
                 series: list[tuple[str, list[int]]] | None, *, lowest: bool) -> None:
    """One key's panel of :func:`_sweep_figure`: one line per design group when there are
    ``series``, else a marker per record and a line through the mean at each sweep value; the
    x axis is labelled under the ``lowest`` visible panel of each column."""
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
        _sweep_means(ax, pairs, finite, line_colour)
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    ax.set_title(f"{spec.label(key)}  [{kind}]", fontsize=10, loc="left")
    ax.set_ylabel(_axis_label(spec, key), fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.15)
    if lowest:  # lowest visible subplot of this column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel(_axis_label(spec, str(spec.sweep)))
    levels = sorted({x for x in colour if math.isfinite(x)})
    if len(levels) <= 10:  # a designed sweep: tick the values it takes
        ax.set_xticks(levels)


def _sweep_means(ax: Axes, pairs: list[tuple[float, float]], finite: list[tuple[float, float]],
                 line_colour: str) -> None:
    """One marker per record (``finite``: (sweep value, value) pairs); the line joins the mean
    at each sweep value of ``pairs``, with a gap where no record at that value has this
    quantity."""
    ax.plot([x for x, _ in finite], [v for _, v in finite], "o", color=line_colour,
            markersize=5, markeredgecolor="black", markeredgewidth=0.5, zorder=3)
    xs = sorted({x for x, _ in pairs})
    means = []
    for x in xs:
        vals = [v for t, v in finite if t == x]
        means.append(sum(vals) / len(vals) if vals else math.nan)
    ax.plot(xs, means, "-", color=line_colour, linewidth=1.5, zorder=2)


def _sweep_key(fig: Figure, axes: Any, spec: _Spec, sweep: str,
               series: list[tuple[str, list[int]]] | None) -> None:
    """The legend below the panels (the design groups, or what markers and lines mean) and the
    figure's title."""
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
    label = spec.label(name)
    if name in spec.matrix_axes:
        rows, columns = spec.matrix_axes[name]
        ax.set_xlabel(columns)
        ax.set_ylabel(rows)
        ax.set_title(textwrap.fill(f"{label} (row: {rows}; column: {columns})",
                                   width=max(40, round(9 * side))), fontsize=11)
    else:
        ax.set_xlabel("victim (model the attack is applied to)")
        ax.set_ylabel("attacker (model the attack is crafted on)")
        ax.set_title(f"{label}: brighter cells = attacks that transfer more\n(row: attacker, "
                     "column: victim; — undefined)", fontsize=11)
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label(f"colour: {_axis_label(spec, name)}")
    return fig

