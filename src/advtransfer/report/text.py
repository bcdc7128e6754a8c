"""The words of a report: the run's details, the records, correlation and within-group tables,
the honest reading of each correlation (one rule, :meth:`_Evidence.verdict`), "in short" and
"what this run shows and does not show", all derived from the numbers; and the order of the
document's sections (:func:`_document`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from advtransfer.report.formatting import (
    _DASH,
    _finite,
    _fmt_p,
    _fmt_r,
    _fmt_r_ci,
    _fmt_seconds,
    _fmt_value,
    _is_number,
    _p_eq,
    _spearman_p,
)
from advtransfer.report.render import _Block
from advtransfer.report.spec import _Spec
from advtransfer.stats import (
    EXACT_SPEARMAN_MAX_N,
    correlation_table,
    group_summary,
    within_group_table,
)

_ALPHA = 0.05


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


def _document(spec: _Spec, results: Mapping[str, Any], corr_rows: list[dict[str, Any]],
              within: tuple[list[_Block], list[_Block], list[str]],
              figures: list[tuple[str, str]], skipped: list[str], *, n_boot: int, seed: int,
              confidence: float) -> list[_Block]:
    """The report's blocks in order: the opening (:func:`_opening_blocks`); when there are
    correlations, their section, the within-group section, the honest reading and the verdict
    (``within``: the first three results of :func:`_within_blocks`, empty without groups);
    then the figures (``(path, caption)`` pairs) and the notes on figures left out."""
    within_section, verdict, within_lines = within
    blocks = _opening_blocks(spec, results, verdict)
    if corr_rows:
        blocks += [*_correlation_blocks(corr_rows, n_boot=n_boot, seed=seed), *within_section,
                   *_honest_blocks(spec, corr_rows, within_lines, confidence), *verdict]
    if figures or skipped:
        blocks.append(_Block("h2", text="Figures"))
        blocks += [_Block("img", text=caption, items=(rel,)) for rel, caption in figures]
        if skipped:
            blocks.append(_Block("ul", items=tuple(skipped)))
    return blocks


def _opening_blocks(spec: _Spec, results: Mapping[str, Any], verdict: list[_Block],
                    ) -> list[_Block]:
    """The title, "In short" (the verdict's summary, when there is one: the report opens on its
    conclusion and the evidence follows), the recipe's description, the run's details and the
    records table."""
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
    return blocks


def _correlation_blocks(corr_rows: list[dict[str, Any]], *, n_boot: int, seed: int,
                        ) -> list[_Block]:
    """The correlations section: how each test and interval is computed, the table and the
    notes of rows that have one."""
    k = len(corr_rows)
    blocks = [
        _Block("h2", text="Correlations"),
        _Block("p", text=(
            "Pearson r and Spearman ρ across source models with two-sided p-values "
            "(null hypothesis: no correlation). Pearson p: t test (scipy). Spearman p: "
            "exact permutation test, marked (exact), when n ≤ "
            f"{EXACT_SPEARMAN_MAX_N}; otherwise scipy's t approximation. Intervals: "
            f"percentile bootstrap over {n_boot} resamples of the records (seed "
            f"{seed}); with few records they are rough and can collapse to a "
            "point. The p-values are not corrected for the "
            f"{k} comparisons in this table.")),
        _correlation_table(corr_rows),
    ]
    notes = [f"{r['metric']} vs {r['outcome']}: {r['note']}" for r in corr_rows
             if r.get("note")]
    if notes:
        blocks += [_Block("p", text="Notes:"), _Block("ul", items=tuple(notes))]
    return blocks


def _honest_blocks(spec: _Spec, corr_rows: list[dict[str, Any]], within_lines: list[str],
                   confidence: float) -> list[_Block]:
    """The honest reading: its one rule, the verdict of each pooled correlation
    (:func:`_honest_line`) and, with groups, of each within-group one."""
    conf = f"{confidence * 100:g}%"
    blocks = [
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
    return blocks
