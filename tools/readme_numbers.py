"""The README's numbers tables, regenerated from runs of the embedded recipes over several seeds.

Each table in README.md sits between ``<!-- numbers:NAME -->`` and ``<!-- /numbers -->``; NAME
is one of :data:`TABLES`. This script runs (or resumes) the recipe behind each table once per
seed of the table (``advtransfer.experiments.runner.run``, the code path of ``advtransfer run``
with ``--seed``), renders every figure that comes out of training as ``mean ± sd`` over the seeds
(sample standard deviation), and either checks the README against the fresh runs or rewrites it::

    python tools/readme_numbers.py --check            # exit 1 when a README number is stale
    python tools/readme_numbers.py --write            # rewrite the tables in place
    python tools/readme_numbers.py --check --only digits-distribution --runs runs/

Why seeds: training depends on the order of floating-point reductions, which changes with the
CPU's kernels (AVX2 vs AVX-512, Intel vs AMD), the BLAS build and the thread count, and a
different order gives a different trained network, as a different seed does. A single run's
second digit is therefore not reproducible across machines; the mean over seeds is, to within
its standard error, and the spread over seeds says how much a reader's run may differ.

``--check`` compares structure exactly (the same rows, matched by their label so that a change
of order is no difference, and the same words) and numbers within a tolerance:

* a measured figure ``m ± s`` (n seeds) may differ from the fresh one by
  ``Z * sqrt(2 / n) * sigma`` (at least one unit of its last digit), where sigma is the largest of
  its own two standard deviations and the root mean square of the standard deviations of its
  table column (or, outside a table, of its line), in the README and in the fresh run. That is a
  two-sample test of the two means at Z = 4.5 standard errors: with the spread known, a false
  alarm over the about 200 measured figures of the README would have a probability of about
  0.1 % when nothing changed (the spread is estimated from 3-5 seeds, which taking the largest of
  the figure's and its column's estimates guards against), while a change of the code that
  moves a mean by more than that is caught. Checked across CPU kernels: the demo and synthetic
  tables computed with ``ATEN_CPU_CAPABILITY=default`` (no SIMD: every seed's numbers differ,
  alpha2's pooled r by up to 0.07) pass against the tables computed with AVX2;
* a timing (``≈``) is not compared: it depends on the machine and its load;
* any other number (a deterministic figure, such as the synthetic-paper differences from the
  authors' files) may differ by ``--tolerance`` (absolute, default 0.02) or 10 %.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advtransfer.experiments.recipes.model_selection import BASELINE_LABELS
from advtransfer.methods import method_label
from advtransfer.report import md_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAPER_CSVS = ROOT / "tests" / "experiments" / "data" / "paper_synthetic_results"
BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)",
                   flags=re.S)
NUMBER = re.compile(r"[−-]?\d+(?:\.\d+)?(?:e[−-]?\d+)?")
MEASURED = re.compile(rf"(?P<m>{NUMBER.pattern}) ± (?P<s>{NUMBER.pattern})")
#: Timings are prefixed with this sign: they depend on the machine and its load, so ``--check``
#: skips them (the README says on which machine and how loaded they were taken).
TIMING = "≈"
#: Standard errors of the difference of two means that a measured figure may move (module doc).
Z = 4.5

Run = tuple[Mapping[str, Any], Path]  # (results.json, run directory) of one seed


def _f(v: Any, digits: int = 2) -> str:
    """A number with a typographic minus, or an en dash when undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}".replace("-", "−")


def _ms(values: Sequence[Any], digits: int = 2) -> str:
    """``mean ± sd`` over seeds (sample sd), or an en dash when a seed gave no value."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if len(v) < len(values) or len(v) < 2:
        return "–"
    return f"{_f(statistics.fmean(v), digits)} ± {statistics.stdev(v):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
           numbers_right: bool = False) -> str:
    """A README table (:func:`advtransfer.report.md_table`): every column left-aligned, or
    with ``numbers_right`` all but the first right-aligned."""
    return md_table(header, rows, None if numbers_right else [False] * len(header)) + "\n"


def _seeds_line(runs: Sequence[Run]) -> str:
    seeds = ", ".join(str(r["seed"]) for r, _ in runs)
    return f"mean ± sd over the {len(runs)} seeds {seeds}"


def digits_distribution(runs: Sequence[Run]) -> str:
    """Pooled and within-share correlations of every alpha with the transfer outcomes, then
    how strongly the designed share drives alpha1 and transfer accuracy."""
    corr = [{(r["metric"], r["outcome"]): r for r in res["correlations"]} for res, _ in runs]
    design = [{r["outcome"]: r for r in json.loads((d / "groups.json").read_text())["design"]}
              for _, d in runs]
    rows = []
    for metric in runs[0][0]["report"]["metrics"]:
        acc = [c[(metric, "transfer_accuracy")] for c in corr]
        loss = [c[(metric, "transfer_loss")] for c in corr]
        rows.append([
            method_label(metric),
            _ms([a["pearson_r"] for a in acc]), _ms([a["spearman_rho"] for a in acc]),
            _ms([(a.get("within") or {}).get("r") for a in acc]),
            _ms([x["pearson_r"] for x in loss]),
        ])
    line = (f"\nThe design: r(share, {method_label('alpha1_t2s')}) = "
            f"{_ms([d['alpha1_t2s']['pearson_r'] for d in design])}, r(share, transfer "
            f"accuracy) = {_ms([d['transfer_accuracy']['pearson_r'] for d in design])} "
            f"({_seeds_line(runs)}).\n")
    return _table(["metric", "r with transfer accuracy", "Spearman rho",
                   "within equal share: r_w", "r with transfer loss"], rows) + line


def synthetic(runs: Sequence[Run]) -> str:
    """alpha, gradient matching and transfer RMSE at four noise scales, then Pearson r."""
    by_scale = [{round(r["scale"], 6): r for r in res["records"]} for res, _ in runs]
    scales = [s for s in sorted(by_scale[0]) if round(s * 10) % 3 == 0]
    columns = [("alpha1_s2t", 3), ("alpha2_s2t", 3), ("combined_s2t", 3),
               ("gradient_matching_distance", 2), ("transfer_rmse", 3)]
    rows = [[f"{s:.1f}", *(_ms([b[s][k] for b in by_scale], d) for k, d in columns)]
            for s in scales]
    corr = [{r["metric"]: r for r in res["correlations"] if r["outcome"] == "transfer_rmse"}
            for res, _ in runs]
    names = {"alpha1_s2t": "alpha1", "alpha2_s2t": "alpha2", "combined_s2t": "combined",
             "gradient_matching_distance": "gradient-matching distance"}
    line = ", ".join(f"{label} {_ms([c[k]['pearson_r'] for c in corr])}"
                     for k, label in names.items())
    return (_table(["scale", *(method_label(k) for k, _ in columns[:3]),
                    "gradient-matching distance", "transfer RMSE"], rows)
            + f"\nPearson r with transfer RMSE over the {len(by_scale[0])} scales: {line}; "
              f"target test R² {_ms([res['target']['test_r2'] for res, _ in runs])} "
              f"({_seeds_line(runs)}).\n")


def synthetic_paper(runs: Sequence[Run]) -> str:
    """The largest difference of the authors' sweep from each of their published files (their
    data and trained networks: nothing is trained, so one run)."""
    (results, _), = runs
    rows = []
    mine = [r for r in results["records"] if "authors_file" in r]
    for path in sorted(PAPER_CSVS.glob("*.csv")):
        with path.open() as fh:
            published = list(csv.DictReader(fh))
        ours = [r for r in mine if r["authors_file"] == path.name]
        worst = 0.0
        for pub in published:
            row = min(ours, key=lambda r: abs(r["scale"] - float(pub["scale"])))
            for col, value in pub.items():
                a, b = float(row[col]), float(value)
                if abs(b) > 1e-4:
                    worst = max(worst, abs(a - b) / abs(b))
        rows.append([f"`{path.name}`", str(len(published)), f"{worst:.1e}"])
    return _table(["published file", "rows", "largest relative difference"], rows)


def model_selection(runs: Sequence[Run]) -> str:
    """Mean weighted Kendall tau over the targets of every method against full fine-tuning (FT,
    the headline) and the linear probe (LP), mean ± sd over seeds, and each method's cost
    relative to one full fine-tune; best FT mean first. The per-target taus and the bootstrap
    intervals of each seed are in that run's report."""
    sels = [res["selection"] for res, _ in runs]
    truths = [s["by_ground_truth"] for s in sels]
    primary = set(runs[0][0]["config"].get("primary") or [])

    def taus(g: str, m: str) -> list[float]:
        return [t[g]["weighted_tau"][m]["mean"] for t in truths]

    def cost(m: str) -> str:
        per = [s["costs"]["seconds_per_candidate"].get(m) for s in sels]
        if any(p is None for p in per):
            return "0 (given)"
        ratio = statistics.fmean(p / s["costs"]["full_finetune_fit_s"]
                                 for p, s in zip(per, sels, strict=True))
        return f"{TIMING}{ratio:.2f}"

    def proto(g: str, name: str, measure: str) -> list[float]:
        return [next(r[measure] for r in t[g]["protocol"]["rows"] if r["name"] == name)
                for t in truths]

    methods = sorted(truths[0]["finetune"]["weighted_tau"],
                     key=lambda m: -statistics.fmean(taus("finetune", m)))
    rows = [[method_label(m) + (" (pre-registered)" if m in primary else ""),
             f"**{_ms(taus('finetune', m), 3)}**", _ms(proto("finetune", m, "rel@1"), 3),
             _ms(taus("linear_probe", m), 3), cost(m)]
            for m in methods]
    for name in ("static_ranker", "random_ranking"):
        rows.append([BASELINE_LABELS[name],
                     f"**{_ms(proto('finetune', name, 'weighted_tau'), 3)}**",
                     _ms(proto("finetune", name, "rel@1"), 3),
                     _ms(proto("linear_probe", name, "weighted_tau"), 3), "0 (given)"])
    header = ["method", "**FT mean tau**", "FT rel@1", "LP mean tau", "cost (x 1 fine-tune)"]
    agreement = [(t["finetune"].get("seed_agreement") or {}).get("mean") for t in truths]
    targets = list(sels[0]["reference_accuracy"])
    summary = (f"\n{_seeds_line(runs).capitalize()}. Two full fine-tuning seeds agree with each "
               f"other at weighted tau {_ms(agreement)} (mean over targets; the ceiling of "
               f"any method); reference accuracy "
               + ", ".join(f"{t} {_ms([s['reference_accuracy'][t] for s in sels], 3)}"
                           for t in targets) + ".\n")
    return _table(header, rows, numbers_right=True) + summary


Renderer = Callable[[Sequence[Run]], str]


@dataclass(frozen=True)
class Table:
    """A README block: the recipe and ``--set`` overrides behind it, its renderer, and the seeds
    it is run with (one seed: a deterministic recipe)."""

    recipe: str
    overrides: tuple[str, ...]
    render: Renderer
    seeds: tuple[int, ...]


FIVE, THREE = (0, 1, 2, 3, 4), (0, 1, 2)
TABLES: dict[str, Table] = {
    "digits-distribution": Table("digits-distribution", (), digits_distribution, FIVE),
    "synthetic": Table("synthetic", (), synthetic, FIVE),
    "synthetic-paper": Table("synthetic", ("data=paper",), synthetic_paper, (0,)),
    "digits-model-selection": Table("digits-model-selection", (), model_selection, THREE),
    "digits-model-selection-shift": Table("digits-model-selection-shift", (), model_selection,
                                          THREE),
    "digits-model-selection-low": Table("digits-model-selection",
                                        ("target_train_per_class=30",), model_selection, THREE),
}


def compute(name: str, runs: Path, threads: int) -> tuple[str, float]:
    """The rendered table ``name`` and the runs' total wall time in seconds, computed with
    ``threads`` torch threads (restored afterwards)."""
    import torch

    from advtransfer.experiments.runner import run

    spec = TABLES[name]
    runs.mkdir(parents=True, exist_ok=True)  # the recipe creates only its own directory
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    done: list[Run] = []
    try:
        for seed in spec.seeds:
            out = runs / f"{name}-seed{seed}"
            done.append((run(spec.recipe, out, overrides=list(spec.overrides), seed=seed,
                             progress=False), out))
    finally:
        torch.set_num_threads(before)
    return spec.render(done), sum(float(r.get("wall_time_s", math.nan)) for r, _ in done)


def _value(token: str) -> float:
    return float(token.replace("−", "-"))


def _digits(token: str) -> int:
    return len(token.split(".")[1]) if "." in token and "e" not in token else 0


@dataclass
class _Part:
    """One table cell or text line: its words (numbers replaced by #), its measured figures
    (mean, sd, digits) and its other numbers."""

    words: str
    measured: list[tuple[float, float, int]]
    plain: list[float]


def _part(text: str) -> _Part:
    measured = [(_value(m["m"]), _value(m["s"]), _digits(m["m"]))
                for m in MEASURED.finditer(text)]
    rest = re.sub(TIMING + NUMBER.pattern, TIMING, MEASURED.sub("@", text))
    return _Part(NUMBER.sub("#", rest), measured, [_value(n) for n in NUMBER.findall(rest)])


def _parse(body: str) -> tuple[list[str], dict[str, list[_Part]], list[_Part]]:
    """A block's table header, its rows by label (so that order does not matter) and its text
    lines."""
    header: list[str] = []
    rows: dict[str, list[_Part]] = {}
    lines: list[_Part] = []
    for line in body.splitlines():
        if not line.startswith("|"):
            if line.strip():
                lines.append(_part(line))
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows[cells[0]] = [_part(c) for c in cells[1:]]
    return header, rows, lines


def _rms(sds: Sequence[float]) -> float:
    return math.sqrt(statistics.fmean(s * s for s in sds)) if sds else 0.0


def _differences(readme: Sequence[_Part], fresh: Sequence[_Part], pooled: Sequence[float],
                 n_seeds: int, tolerance: float, where: str) -> list[str]:
    """What differs between parts matched one to one; ``pooled[i]``: the pooled sd of part i's
    column or line."""
    out = []
    for i, (a, b) in enumerate(zip(readme, fresh, strict=True)):
        if a.words != b.words or len(a.measured) != len(b.measured) or len(a.plain) != len(
                b.plain):
            out.append(f"{where}: {a.words!r} vs {b.words!r}")
            continue
        for (ma, sa, d), (mb, sb, _) in zip(a.measured, b.measured, strict=True):
            sigma = max(sa, sb, pooled[i])
            tol = max(10.0 ** -d, Z * math.sqrt(2 / n_seeds) * sigma)
            if abs(ma - mb) > tol:
                out.append(f"{where}: {ma} ± {sa} vs fresh {mb} ± {sb} (tolerance {tol:.3g})")
        for x, y in zip(a.plain, b.plain, strict=True):
            if not (abs(x - y) <= tolerance or (x and abs(x - y) <= 0.1 * abs(x))):
                out.append(f"{where}: {x} vs fresh {y}")
    return out


def differences(readme: str, fresh: str, n_seeds: int, tolerance: float = 0.02) -> list[str]:
    """Every way in which a README block differs from a fresh rendering beyond the tolerances
    of the module docstring (empty: the README holds)."""
    (ha, ra, la), (hb, rb, lb) = _parse(readme), _parse(fresh)
    if ha != hb or set(ra) != set(rb) or len(la) != len(lb):
        return [f"structure: header {ha} vs {hb}, rows {sorted(set(ra) ^ set(rb))} differ, "
                f"{len(la)} vs {len(lb)} text lines"]
    out = []
    columns = len(ha) - 1
    col_sd = [max(_rms([s for r in rows.values() for _, s, _ in r[j].measured])
                  for rows in (ra, rb)) for j in range(columns)]
    for label in ra:
        out += _differences(ra[label], rb[label], col_sd, n_seeds, tolerance, f"row {label!r}")
    line_sd = [max(_rms([s for _, s, _ in p.measured]) for p in pair)
               for pair in zip(la, lb, strict=True)]
    out += _differences(la, lb, line_sd, n_seeds, tolerance, "text")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when a table is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    parser.add_argument("--only", action="append", choices=sorted(TABLES),
                        help="only this table (repeatable)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="run directories (default: a temporary folder)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="for numbers that are not measured over seeds (default 0.02)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these small models gain nothing from "
                             "a second one)")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    found = {m.group("name") for m in BLOCK.finditer(text)}
    wanted = args.only or sorted(found)
    missing = [n for n in wanted if n not in found]
    if missing:
        print(f"README has no block for {missing}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        fresh = {}
        for name in wanted:
            fresh[name], seconds = compute(name, runs, args.threads)
            print(f"{name}: {len(TABLES[name].seeds)} run(s) in {seconds:.1f} s",
                  file=sys.stderr)
    stale: dict[str, list[str]] = {}

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in fresh:
            return m.group(0)
        found = differences(m.group("body"), fresh[name], len(TABLES[name].seeds),
                            args.tolerance)
        if found:
            stale[name] = found
        return m.group(1) + fresh[name] + m.group(4)

    new = BLOCK.sub(replace, text)
    if args.write:
        args.readme.write_text(new)
        print(f"rewrote {len(wanted)} table(s) in {args.readme}", file=sys.stderr)
        return 0
    for name, found in stale.items():
        print(f"README table {name!r} differs from a fresh run:\n  " + "\n  ".join(found)
              + f"\nfresh:\n{fresh[name]}", file=sys.stderr)
    print(json.dumps({"checked": wanted, "stale": sorted(stale)}))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
