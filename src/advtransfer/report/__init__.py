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
figure registry is touched, and nothing has to be closed. Importing this package does not import
matplotlib.

The package, by job: :mod:`~advtransfer.report.spec` checks the results (``_parse``);
:mod:`~advtransfer.report.figures` draws the figures; :mod:`~advtransfer.report.render` holds
the document model and renders it to Markdown (:func:`md_table`) and HTML;
:mod:`~advtransfer.report.text` writes the tables and the readings and orders the sections;
:mod:`~advtransfer.report.formatting` formats single values. This module writes the files
(:func:`write_report`). It holds ``_png_bytes`` and ``_declutter_labels``, the two costly steps
of a figure, under those names: a test tier that does not look at figures replaces them here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advtransfer.fileio import atomic_write_bytes, atomic_write_text, write_json
from advtransfer.report.figures import (
    MAX_LABELLED_POINTS,
    _declutter_labels,
    _matrix_figure,
    _png_bytes,
    _scatter_figure,
    _sweep_figure,
    _sweep_values,
    _tau_figure,
)
from advtransfer.report.formatting import _csv_cell, _slug
from advtransfer.report.render import _Block, _render_html, _render_md, md_table
from advtransfer.report.spec import _parse, _Spec
from advtransfer.report.text import _document, _within_blocks
from advtransfer.stats import correlation_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["md_table", "write_report"]


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
    atomic_write_text(out / "results.csv", _records_csv(spec))

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

    figures, skipped = _write_figures(spec, results, out, corr_rows)
    blocks = _document(spec, results, corr_rows, (within_section, verdict, within_lines),
                       figures, skipped, n_boot=n_boot, seed=bootstrap_seed,
                       confidence=confidence)
    atomic_write_text(out / "report.md", _render_md(blocks))
    atomic_write_text(out / "report.html", _render_html(blocks, spec.title))
    return corr_rows


def _records_csv(spec: _Spec) -> str:
    """``results.csv``: one row per record, the columns the union of the record keys in
    first-seen order, values at full precision (:func:`_csv_cell`)."""
    cols = list(dict.fromkeys(k for r in spec.records for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in spec.records:
        writer.writerow([_csv_cell(r.get(c)) for c in cols])
    return buf.getvalue()


class _FigureFiles:
    """The figures of one report, each written to ``figures/NAME.png`` under ``out`` as it is
    drawn, ``NAME`` the slug of its stem made unique by ``_2``, ``_3``, ...; ``figures`` lists
    the ``(relative path, caption)`` pairs in order."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.used: set[str] = set()
        self.figures: list[tuple[str, str]] = []

    def save(self, fig: Figure | None, stem: str, caption: str) -> None:
        """Write ``fig`` (nothing when None) and free its artists."""
        if fig is None:
            return
        name = _slug(stem)
        base, k = name, 2
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        rel = f"figures/{name}.png"
        atomic_write_bytes(self.out / rel, _png_bytes(fig))
        fig.clear()
        self.figures.append((rel, caption))


def _write_figures(spec: _Spec, results: Mapping[str, Any], out: Path,
                   corr_rows: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Draw and write every figure: a scatter plot per outcome, the sweep curves, a heatmap per
    matrix and model selection's tau chart, then list the figures a recipe drew itself into the
    run directory (``results['report']['extra_figures']``: [relative path, caption] pairs).
    Returns the ``(path, caption)`` pairs and the notes on figures left out."""
    files = _FigureFiles(out)
    by_pair = {(r["metric"], r["outcome"]): r for r in corr_rows}
    if spec.metrics:
        for outcome in spec.outcomes:
            files.save(_scatter_figure(spec, outcome, by_pair, declutter=_declutter_labels),
                       f"scatter_{outcome}", _scatter_caption(spec, outcome))
    skipped: list[str] = []
    if spec.sweep is not None and _sweep_values(spec) is None:
        skipped.append(f"No sweep figure and no colouring: {spec.sweep!r} has no finite "
                       "numeric value in any record.")
    if spec.sweep is not None:
        files.save(_sweep_figure(spec), f"sweep_{spec.sweep}",
                   f"Each metric and outcome as a function of {spec.label(spec.sweep)} (markers: "
                   "records; line: mean at each value; a gap marks missing values).")
    for mname, (names, values) in spec.matrices.items():
        rows, columns = spec.matrix_axes.get(mname, (
            "attackers (adversarial examples crafted on)", "victims (evaluated on)"))
        files.save(_matrix_figure(spec, mname, names, values), f"matrix_{mname}",
                   f"{spec.label(mname)}: rows are {rows}, columns are {columns}.")
    tau = (results.get("selection") or {}).get("weighted_tau")
    if isinstance(tau, Mapping) and tau:
        files.save(_tau_figure(spec, tau), "selection_weighted_tau",
                   "Weighted Kendall tau of each method's ranking of the candidates against "
                   "their fine-tuning accuracy, per target task (bars) and mean (diamonds).")
    for rel, caption in results.get("report", {}).get("extra_figures", []):
        if (out / rel).is_file():
            files.figures.append((str(rel), str(caption)))
        else:
            skipped.append(f"The recipe's figure {rel} is missing.")
    return files.figures, skipped


def _scatter_caption(spec: _Spec, outcome: str) -> str:
    """The caption of ``outcome``'s scatter figure: what the points are, whether they are
    labelled, what colours them and, with groups, that titles give r_w."""
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
    return caption + "."
