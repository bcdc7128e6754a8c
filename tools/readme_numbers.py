"""The README's numbers tables, regenerated from runs of the embedded recipes.

Each table in README.md sits between ``<!-- numbers:NAME -->`` and ``<!-- /numbers -->``; NAME
is one of :data:`TABLES`. This script runs (or resumes) the recipe behind each table with
``advtransfer.experiments.runner.run`` -- the same code path as ``advtransfer run`` -- renders
the table from the run's ``results.json`` and either checks the README against it or rewrites
it::

    python tools/readme_numbers.py --check            # exit 1 when a README number is stale
    python tools/readme_numbers.py --write            # rewrite the tables in place
    python tools/readme_numbers.py --check --only digits-distribution --runs runs/

``--check`` compares numbers, not text: a number may differ by ``--tolerance`` (absolute, default
0.02) from the freshly computed one, so that another BLAS build's last-digit rounding does not
fail the check while a stale table does. The recipes train networks, and the thread count changes
the order of floating-point reductions and so the trained weights: the README's numbers are
taken with ``--threads 2`` (the 2-core machine they describe, and the default of ``make demo``
there); another thread count gives numbers that differ in the second digit.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAPER_CSVS = ROOT / "tests" / "experiments" / "data" / "paper_synthetic_results"
BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)",
                   flags=re.S)
NUMBER = re.compile(r"[−-]?\d+(?:\.\d+)?(?:e[−-]?\d+)?")


def _f(v: Any, digits: int = 2) -> str:
    """A number with a typographic minus, or an en dash when undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}".replace("-", "−")


def _p(p: Any) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           align: Sequence[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


_DIRECTION = {"t2s": "target→source", "s2t": "source→target"}


def _metric_label(key: str) -> str:
    metric, tag = key.rsplit("_", 1)
    return f"{metric} {_DIRECTION[tag]}"


def digits_distribution(results: Mapping[str, Any], run_dir: Path) -> str:
    """Pooled and within-share correlations of every alpha with the transfer outcomes, then
    how strongly the designed share drives alpha1 and transfer accuracy."""
    corr = {(r["metric"], r["outcome"]): r for r in results["correlations"]}
    rows = []
    for metric in results["report"]["metrics"]:
        acc, loss = corr[(metric, "transfer_accuracy")], corr[(metric, "transfer_loss")]
        w = acc.get("within") or {}
        rows.append([
            _metric_label(metric),
            f"{_f(acc['pearson_r'])} ({_p(acc['pearson_p'])})",
            _f(acc["spearman_rho"]),
            f"{_f(w.get('r'))} [{_f(w.get('ci_low'))}, {_f(w.get('ci_high'))}] ({_p(w.get('p'))})",
            f"{_f(loss['pearson_r'])} ({_p(loss['pearson_p'])})",
        ])
    design = {r["outcome"]: r for r in json.loads((run_dir / "groups.json").read_text())["design"]}
    line = (f"\nThe design: r(share, alpha1 target→source) = "
            f"{_f(design['alpha1_t2s']['pearson_r'])}, r(share, transfer accuracy) = "
            f"{_f(design['transfer_accuracy']['pearson_r'])}.\n")
    return _table(["metric", "r with transfer accuracy (p)", "Spearman rho",
                   "within equal share: r_w [95% CI] (p)", "r with transfer loss (p)"],
                  rows) + line


def synthetic(results: Mapping[str, Any], run_dir: Path) -> str:
    """alpha, gradient matching and transfer RMSE at four noise scales, then Pearson r."""
    by_scale = {round(r["scale"], 6): r for r in results["records"]}
    rows = [[f"{s:.1f}", _f(r["alpha1_s2t"], 3), _f(r["alpha2_s2t"], 3),
             _f(r["combined_s2t"], 3), _f(r["gradient_matching_distance"]),
             _f(r["transfer_rmse"], 3)]
            for s, r in sorted(by_scale.items()) if round(s * 10) % 3 == 0]
    corr = {r["metric"]: r for r in results["correlations"]
            if r["outcome"] == "transfer_rmse"}
    names = {"alpha1_s2t": "alpha1", "alpha2_s2t": "alpha2", "combined_s2t": "combined",
             "gradient_matching_distance": "gradient-matching distance"}
    line = ", ".join(f"{label} {_f(corr[k]['pearson_r'])}" for k, label in names.items())
    return (_table(["scale", "alpha1 S→T", "alpha2 S→T", "combined S→T",
                    "gradient-matching distance", "transfer RMSE"], rows)
            + f"\nPearson r with transfer RMSE over the {len(by_scale)} scales: {line}.\n")


def synthetic_paper(results: Mapping[str, Any], run_dir: Path) -> str:
    """The largest difference of the authors' sweep from each of their published files."""
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


def model_selection(results: Mapping[str, Any], run_dir: Path) -> str:
    """Weighted Kendall tau of every method against full fine-tuning (FT, the headline) and the
    linear probe (LP), per target and mean with the 95% interval, and each method's cost
    relative to one full fine-tune; best FT mean first."""
    sel = results["selection"]
    truth = sel["by_ground_truth"]
    ft, lp = truth["finetune"]["weighted_tau"], truth["linear_probe"]["weighted_tau"]
    costs = sel["costs"]["seconds_per_candidate"]
    fit = sel["costs"]["full_finetune_fit_s"]
    targets = [t for t in next(iter(ft.values())) if t != "mean"]
    primary = set(results["config"].get("primary") or [])

    def interval(g: str, m: str) -> str:
        iv = truth[g]["intervals"][m]
        return f"[{_f(iv['low'], 3)}, {_f(iv['high'], 3)}]"

    rows = []
    for m, row in sorted(ft.items(), key=lambda kv: -kv[1]["mean"]):
        cost = costs.get(m)
        rows.append([f"{m} (pre-registered)" if m in primary else m,
                     *(_f(row[t], 3) for t in targets), f"**{_f(row['mean'], 3)}**",
                     interval("finetune", m), *(_f(lp[m][t], 3) for t in targets),
                     _f(lp[m]["mean"], 3), interval("linear_probe", m),
                     f"{TIMING}{cost / fit:.2f}" if cost is not None else "0 (given)"])
    header = ["method", *(f"FT {t}" for t in targets), "**FT mean**", "FT 95% interval",
              *(f"LP {t}" for t in targets), "LP mean", "LP 95% interval",
              "cost (x 1 fine-tune)"]
    agreement = (truth["finetune"].get("seed_agreement") or {}).get("mean")
    summary = (f"\n**Against full fine-tuning:** {truth['finetune']['goal']}\n\n"
               f"**Against the linear probe:** {truth['linear_probe']['goal']}\n\n"
               f"Two full fine-tuning seeds agree with each other at weighted tau "
               f"{_f(agreement, 2)} (mean over targets); reference accuracy "
               + ", ".join(f"{t} {_f(a, 3)}" for t, a in sel["reference_accuracy"].items())
               + ".\n")
    return _table(header, rows, ["---", *["---:"] * (len(header) - 1)]) + summary


#: README table name -> (recipe, --set overrides, renderer)
Renderer = Callable[[Mapping[str, Any], Path], str]
TABLES: dict[str, tuple[str, tuple[str, ...], Renderer]] = {
    "digits-distribution": ("digits-distribution", (), digits_distribution),
    "synthetic": ("synthetic", (), synthetic),
    "synthetic-paper": ("synthetic", ("data=paper",), synthetic_paper),
    "digits-model-selection": ("digits-model-selection", (), model_selection),
    "digits-model-selection-shift": ("digits-model-selection-shift", (), model_selection),
    "digits-model-selection-low": ("digits-model-selection", ("target_train_per_class=30",),
                                   lambda r, d: model_selection(r, d).split("\n\n", 1)[1]),
}


def compute(name: str, runs: Path, threads: int) -> tuple[str, float]:
    """The rendered table ``name`` and the run's wall time in seconds, computed with
    ``threads`` torch threads (restored afterwards)."""
    import torch

    from advtransfer.experiments.runner import run

    recipe, overrides, render = TABLES[name]
    runs.mkdir(parents=True, exist_ok=True)  # the recipe creates only its own directory
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = run(recipe, runs / name, overrides=list(overrides), progress=False)
    finally:
        torch.set_num_threads(before)
    return render(results, runs / name), float(results.get("wall_time_s", math.nan))


#: Timings are prefixed with this sign: they depend on the machine and its load, so ``--check``
#: skips them (the README says on which machine and how loaded they were taken).
TIMING = "≈"


def _numbers(text: str) -> list[float]:
    text = re.sub(TIMING + NUMBER.pattern, TIMING, text)
    return [float(m.replace("−", "-")) for m in NUMBER.findall(text)]


def same_numbers(readme: str, fresh: str, tolerance: float) -> bool:
    """Whether two renderings hold the same words and numbers within ``tolerance``."""
    words = [NUMBER.sub("#", re.sub(TIMING + NUMBER.pattern, TIMING, t)) for t in (readme, fresh)]
    a, b = _numbers(readme), _numbers(fresh)
    return (words[0] == words[1] and len(a) == len(b)
            and all(abs(x - y) <= tolerance or (x and abs(x - y) <= 0.1 * abs(x))
                    for x, y in zip(a, b, strict=True)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when a table is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    parser.add_argument("--only", action="append", choices=sorted(TABLES),
                        help="only this table (repeatable)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="run directories (default: a temporary folder)")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
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
            print(f"{name}: recipe ran in {seconds:.1f} s", file=sys.stderr)
    stale = []

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in fresh:
            return m.group(0)
        if not same_numbers(m.group("body"), fresh[name], args.tolerance):
            stale.append(name)
        return m.group(1) + fresh[name] + m.group(4)

    new = BLOCK.sub(replace, text)
    if args.write:
        args.readme.write_text(new)
        print(f"rewrote {len(wanted)} table(s) in {args.readme}", file=sys.stderr)
        return 0
    for name in stale:
        print(f"README table {name!r} differs from a fresh run:\n{fresh[name]}", file=sys.stderr)
    print(json.dumps({"checked": wanted, "stale": stale}))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
