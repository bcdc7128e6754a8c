r"""The analysis of a model-selection run and its text: how well each method ranks the
candidates against a ground truth, with intervals, the ground truth's agreement with itself,
the evaluation protocol's measures and baselines, each method's cost, and the Markdown tables
and sentences of the report.

Every function here works on plain dictionaries of numbers, ``scores[target][method]
[candidate]`` and ``truth[target][candidate]`` (or, for :func:`protocol_evaluation`,
``scores[method][target][candidate]``), so a recipe of any modality can use it
(the model-selection recipes, :mod:`advtransfer.experiments.recipes.digits_selection` and
:mod:`advtransfer.experiments.recipes.imagenet_zoo`, do). Nothing here computes a stored unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from advtransfer.estimators import weighted_kendall_tau
from advtransfer.estimators.protocol import evaluate_methods as protocol_evaluate
from advtransfer.estimators.protocol import get_measure
from advtransfer.estimators.protocol import seed_agreement as protocol_seed_agreement
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    ESTIMATOR_METHODS,
    GRADIENT_METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
    method_label,
    needed_methods,
)
from advtransfer.report import md_table
from advtransfer.selection import evaluate_methods, evaluation_to_dict, summarize

__all__ = [
    "BASELINE_LABELS",
    "GROUND_TRUTHS",
    "PROTOCOL_MEASURES",
    "agreement_text",
    "analyse_ground_truths",
    "best_estimator",
    "by_method",
    "cost_table",
    "floored",
    "goal_sentence",
    "ground_truth_name",
    "method_costs",
    "n_seeds",
    "num",
    "protocol_evaluation",
    "protocol_table",
    "report_labels",
    "seed_agreement",
    "seed_taus",
    "selection_summary",
    "subsample_intervals",
    "tau_table",
    "wins_losses",
]

Scores = dict[str, dict[str, dict[str, float]]]
"""``scores[target][method][candidate]``."""
Truth = dict[str, dict[str, float]]
"""``truth[target][candidate]``: the ground truth's test accuracy of each candidate."""
PerSeed = dict[str, dict[str, list[float]]]
"""``per_seed[target][candidate]``: the ground truth of each fine-tuning seed."""

#: The two computed ground truths of the digits recipes: a linear probe on the penultimate
#: features and full fine-tuning (grid + seeds).
GROUND_TRUTHS = ("linear_probe", "finetune")
#: The protocol's measures in the report's order (:mod:`advtransfer.estimators.protocol`).
PROTOCOL_MEASURES = ("weighted_tau", "kendall_tau", "rel@1", "rel@3", "regret@1")
BASELINE_LABELS = {"seed_ceiling": "fine-tuning seeds' ceiling (seed vs seed)",
                   "static_ranker": "static ranker (mean rank on the other targets)",
                   "random_ranking": "random ranking"}
_OUTCOME_LABELS = {
    "transfer_accuracy": "transfer accuracy (fine-tuned head)",
    "reference_accuracy": "reference accuracy (target-trained model, target test set)",
}


def num(v: Any) -> float:
    """``v`` as a float, None as NaN (a method that could not score a candidate)."""
    return math.nan if v is None else float(v)


def report_labels(metrics: list[str], ground_truth: str) -> dict[str, str]:
    """The report's label of every metric (:func:`advtransfer.methods.method_label`) and of the
    outcomes; the transfer accuracy is named after ``ground_truth``."""
    labels = {m: method_label(m) for m in metrics}
    labels.update({k: v for k, v in _OUTCOME_LABELS.items()
                   if k in metrics or k in ("transfer_accuracy", "reference_accuracy")})
    if ground_truth == "finetune":
        labels["transfer_accuracy"] = "transfer accuracy (full fine-tuning)"
    return labels


def ground_truth_name(ground_truth: str) -> str:
    """Readable name of a ground truth."""
    return "full fine-tuning" if ground_truth == "finetune" else "the linear probe"


def selection_summary(scores: Scores, truth: Truth,
                      source_accuracy: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    """The ``"selection"`` block of a recipe's results.

    ``scores[target][method][candidate]``, ``truth[target][candidate]`` and
    ``source_accuracy[target][candidate]`` (or None) -> per-target evaluations (weighted tau,
    Kendall tau, Pearson, top-1/top-3 relative accuracy) and tables of each metric per target
    with the mean, the candidate each method picks per target and the true best."""
    evaluations = {t: evaluate_methods(scores[t], truth[t],
                                       source_accuracy=None if source_accuracy is None
                                       else source_accuracy[t])
                   for t in scores}
    out: dict[str, Any] = {
        metric: summarize(evaluations, metric)
        for metric in ("weighted_tau", "kendall_tau", "pearson", "top1", "top3")}
    picked: dict[str, dict[str, str]] = {}
    for t, per in scores.items():
        all_scores = dict(per)
        if source_accuracy is not None:
            all_scores["source_accuracy"] = source_accuracy[t]
        for m, s in all_scores.items():
            best = max(s, key=lambda c: (s[c] if s[c] is not None and math.isfinite(s[c])
                                         else -math.inf))
            picked.setdefault(m, {})[t] = best
    out["picked"] = picked
    out["best"] = {t: max(tr, key=tr.__getitem__) for t, tr in truth.items()}
    out["truth"] = truth
    out["evaluations"] = {t: {m: evaluation_to_dict(e) for m, e in ev.items()}
                          for t, ev in evaluations.items()}
    return out


def wins_losses(table: dict[str, dict[str, float]]) -> str:
    """One sentence: where the default adversarial score beats / loses to LogME."""
    if "alpha1" not in table and "combined" not in table:
        return ""
    parts = []
    for adv in ("alpha1", "alpha2", "combined"):
        if adv not in table:
            continue
        better = [t for t, v in table[adv].items() if t != "mean" and "logme" in table
                  and math.isfinite(v) and math.isfinite(table["logme"].get(t, math.nan))
                  and v > table["logme"][t]]
        parts.append(f"{adv} beats LogME on {len(better)}/{len(table[adv]) - 1} target(s)"
                     + (f" ({', '.join(better)})" if better else ""))
    return "; ".join(parts) + "."


def floored(values: Sequence[float]) -> list[float]:
    """Non-finite scores replaced by a value below every finite one (ranked last), the rule of
    :func:`advtransfer.selection.evaluate_methods`."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [0.0] * len(values)
    floor = min(finite) - 1.0 - (max(finite) - min(finite))
    return [v if math.isfinite(v) else floor for v in values]


def _subsample_draws(scores: Scores, truth: Truth, methods: Sequence[str], *,
                     resamples: int, seed: int, fraction: float) -> dict[str, list[float]]:
    """Each method's mean (over targets) weighted tau in each of ``resamples`` draws of a
    seeded ``fraction`` of every target's candidates (at least 3; the same for every method)."""
    rng = torch.Generator().manual_seed(seed)
    draws: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(resamples):
        per: dict[str, list[float]] = {m: [] for m in methods}
        for t in truth:
            names = list(truth[t])
            k = max(3, round(fraction * len(names)))
            keep = [names[i] for i in torch.randperm(len(names), generator=rng)[:k].tolist()]
            tr = [truth[t][n] for n in keep]
            for m in methods:
                sc = floored([num(scores[t][m][n]) for n in keep])
                per[m].append(weighted_kendall_tau(sc, tr))
        for m in methods:
            vals = [v for v in per[m] if math.isfinite(v)]
            draws[m].append(sum(vals) / len(vals) if vals else math.nan)
    return draws


def subsample_intervals(scores: Scores, truth: Truth, methods: Sequence[str], *,
                        against: str, resamples: int, seed: int,
                        fraction: float = 0.8) -> dict[str, dict[str, float]]:
    """Percentile intervals of the mean (over targets) weighted Kendall tau by subsampling
    candidates.

    Each of ``resamples`` draws keeps a seeded random ``fraction`` of the candidates of every
    target (without replacement, so no artificial ties), and recomputes every method's weighted
    tau and its mean over targets. Returns ``{method: {"low": 2.5 %, "high": 97.5 %,
    "p_beats": share of draws where the method's mean tau exceeds that of ``against``}}``
    (paired: the same candidates for every method)."""
    draws = _subsample_draws(scores, truth, methods, resamples=resamples, seed=seed,
                             fraction=fraction)
    out: dict[str, dict[str, float]] = {}
    base = torch.tensor(draws[against], dtype=torch.float64)
    for m in methods:
        d = torch.tensor(draws[m], dtype=torch.float64)
        ok = torch.isfinite(d)
        q = torch.quantile(d[ok], torch.tensor([0.025, 0.975], dtype=torch.float64)) \
            if bool(ok.any()) else torch.tensor([math.nan, math.nan])
        out[m] = {"low": float(q[0]), "high": float(q[1]),
                  "p_beats": float((d > base).double().mean())}
    return out


def n_seeds(per_seed: PerSeed) -> int:
    """How many fine-tuning seeds ``per_seed[target][candidate]`` holds (the same for all)."""
    return len(next(iter(next(iter(per_seed.values())).values())))


def seed_taus(scores: Scores, per_seed: PerSeed, methods: Sequence[str]) -> dict[str, list[float]]:
    """Mean (over targets) weighted tau of every method against each fine-tuning seed's truth
    alone."""
    out: dict[str, list[float]] = {m: [] for m in methods}
    for s in range(n_seeds(per_seed)):
        truth = {t: {n: v[s] for n, v in tr.items()} for t, tr in per_seed.items()}
        table = summarize({t: evaluate_methods({m: scores[t][m] for m in methods}, truth[t])
                           for t in truth})
        for m in methods:
            out[m].append(table[m]["mean"])
    return out


def seed_agreement(per_seed: PerSeed) -> dict[str, float]:
    """How well the ground truth ranks itself: per target, the mean over pairs of fine-tuning
    seeds of the weighted Kendall tau between the two seeds' accuracies
    (:func:`advtransfer.estimators.protocol.seed_agreement`; ``nan`` with one seed), and its
    ``"mean"`` over targets. A method can hardly be expected to agree with the mean truth much
    better than two runs of the truth agree with each other."""
    measure = get_measure("weighted_tau")
    out: dict[str, float] = {}
    for t, tr in per_seed.items():
        several = n_seeds({t: tr}) > 1
        out[t] = protocol_seed_agreement({t: tr}, measure) if several else math.nan
    vals = [v for v in out.values() if math.isfinite(v)]
    out["mean"] = sum(vals) / len(vals) if vals else math.nan
    return out


def by_method(scores: Scores) -> dict[str, dict[str, dict[str, float]]]:
    """``scores[target][method][candidate]`` as ``[method][target][candidate]``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for t, per in scores.items():
        for m, values in per.items():
            out.setdefault(m, {})[t] = values
    return out


def protocol_evaluation(scores: dict[str, dict[str, dict[str, float]]], truth: Truth,
                        truth_runs: PerSeed | None, *, resamples: int,
                        seed: int) -> dict[str, Any]:
    """The evaluation protocol over ``scores[method][target][candidate]`` against ``truth``
    (:func:`advtransfer.estimators.protocol.evaluate_methods`): weighted and plain Kendall tau,
    rel@1, rel@3 and regret@1 (the test accuracy, a fraction, lost by taking the top-ranked
    candidate instead of the best), each
    the mean over targets with a 95 % bootstrap interval over candidates and targets
    (``resamples`` draws), and the rows of the seeds' ceiling (with ``truth_runs``), the
    static ranker (two targets or more) and a random ranking. NaN scores propagate (a method
    that cannot score a candidate gets NaN on that target)."""
    runs = truth_runs if truth_runs and n_seeds(truth_runs) > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one target: no static ranker row
        result = protocol_evaluate(scores, truth, truth_runs=runs,
                                   measures=[get_measure(m) for m in PROTOCOL_MEASURES],
                                   n_boot=resamples, seed=seed)
    return {"measures": list(result.measures), "n_boot": result.n_boot,
            "level": result.level, "rows": result.to_rows()}


def _f3(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "—"


def protocol_table(evaluation: dict[str, Any]) -> str:
    """Markdown: one row per method and baseline, each measure's mean over targets and its
    bootstrap interval; best weighted tau first, the baselines last."""
    measures = evaluation["measures"]
    header = ["method", *(f"{m} [95 % CI]" for m in measures)]
    methods = [r for r in evaluation["rows"] if r["kind"] == "method"]
    methods.sort(key=lambda r: -r["weighted_tau"] if math.isfinite(r["weighted_tau"])
                 else math.inf)
    rows = []
    for r in [*methods, *(r for r in evaluation["rows"] if r["kind"] != "method")]:
        name = BASELINE_LABELS.get(r["name"], method_label(r["name"]))
        rows.append([name, *(f"{_f3(r[m])} [{_f3(r[m + '_low'])}, {_f3(r[m + '_high'])}]"
                             for m in measures)])
    return md_table(header, rows)


def tau_table(table: dict[str, dict[str, float]], ci: dict[str, dict[str, float]] | None,
              per_seed_taus: dict[str, list[float]] | None, against: str) -> str:
    """Markdown: per-target weighted tau, mean, its subsampling interval, the range over
    fine-tuning seeds, and P(mean tau > the best feature estimator's)."""
    targets = [t for t in next(iter(table.values())) if t != "mean"]
    head = ["method", *targets, "mean"]
    if ci is not None:
        head += ["95% interval", f"P(> {method_label(against)})"]
    if per_seed_taus is not None:
        head += ["per fine-tuning seed"]
    rows = []
    for m, row in sorted(table.items(), key=lambda kv: -kv[1]["mean"] if math.isfinite(
            kv[1]["mean"]) else math.inf):
        cells = [method_label(m), *(_f3(row[t]) for t in targets), f"**{_f3(row['mean'])}**"]
        if ci is not None:
            iv = ci.get(m)
            cells += ([f"[{_f3(iv['low'])}, {_f3(iv['high'])}]",
                       "—" if m == against else f"{iv['p_beats']:.2f}"] if iv else ["", ""])
        if per_seed_taus is not None:
            cells.append(" / ".join(_f3(v) for v in per_seed_taus.get(m, [])))
        rows.append(cells)
    return md_table(head, rows)


def cost_table(costs: dict[str, float], fit_seconds: float) -> str:
    """Markdown: seconds per candidate and target of each method, and relative to one full
    fine-tune."""
    return md_table(["method", "s per candidate", "x one full fine-tune"],
                    [[method_label(m), f"{v:.4f}", f"{v / fit_seconds:.3f}"]
                     for m, v in sorted(costs.items(), key=lambda kv: kv[1])])


def method_costs(methods: Sequence[str], adv_seconds: dict[str, float],
                 est_seconds: dict[str, float], n_pairs: int) -> dict[str, float]:
    """Seconds per (candidate, target) of each method: the adversarial units shared by every
    method of one space (logits / features, the reference attack amortised over the pool),
    the forward pass plus the estimator for the estimators, the sum of the components for a
    rank average."""
    out: dict[str, float] = {}
    for m in needed_methods(methods):
        if m in ADVERSARIAL_METHODS:
            space = "features" if m in ADVERSARIAL_FEATURE_METHODS else "logits"
            out[m] = adv_seconds[space] / n_pairs
        elif m in RANK_AVERAGE_METHODS:
            out[m] = sum(out[c] for c in RANK_AVERAGE_METHODS[m])
        elif m in est_seconds:  # a pooled estimator's time is that of computing its parts
            out[m] = (est_seconds["forward"] + est_seconds[m]) / n_pairs
    return {m: out[m] for m in methods if m in out}


def best_estimator(table: dict[str, dict[str, float]]) -> str:
    """The feature/output estimator with the highest mean weighted tau: the estimators and the
    pooled estimators, not the gradient scores (:data:`~advtransfer.methods.GRADIENT_METHODS`,
    LGC), which :func:`goal_sentence` counts with the adversarial scores it competes with.
    ``"source_accuracy"`` (the data-free baseline) when the table has no such estimator."""
    est = [m for m in table if (m in ESTIMATOR_METHODS or m in POOL_METHODS)
           and m not in GRADIENT_METHODS]
    if not est:
        return "source_accuracy"
    return max(est, key=lambda m: table[m]["mean"] if math.isfinite(table[m]["mean"])
               else -math.inf)


def goal_sentence(table: dict[str, dict[str, float]], against: str,
                  primary: Sequence[str]) -> str:
    """Plain sentences: does each pre-registered ``primary`` score, and (post hoc) the best of
    all adversarial / gradient / combined scores, beat the best feature/output estimator in
    mean weighted tau?"""
    def mean(m: str) -> float:
        v = table[m]["mean"]
        return v if math.isfinite(v) else -math.inf

    adv = [m for m in table if m in ADVERSARIAL_METHODS or m in RANK_AVERAGE_METHODS
           or m in GRADIENT_METHODS]
    if not adv or against not in table:
        return ""
    e = mean(against)
    parts = [f"Pre-registered {m}: {mean(m):.3f}, "
             f"{'beats' if mean(m) > e else 'does not beat'} the best estimator {against} "
             f"({e:.3f})" for m in primary if m in table]
    best = max(adv, key=mean)
    parts.append(f"best of all {len(adv)} adversarial / gradient / combined scores (post hoc, so "
                 f"optimistic): {best} ({mean(best):.3f}, "
                 f"{'beats' if mean(best) > e else 'does not beat'} it)")
    return "; ".join(parts) + "."


def agreement_text(agreement: dict[str, float] | None) -> str:
    """A sentence on the full fine-tuning truth's agreement with itself (empty without one)."""
    if not agreement or not math.isfinite(agreement["mean"]):
        return ""
    return (" Agreement of the full fine-tuning truth with itself (weighted tau between two "
            "fine-tuning seeds): " + ", ".join(f"{t} {v:.3f}" for t, v in agreement.items())
            + ".")


def analyse_ground_truths(scores: Scores, truths: dict[str, Truth], per_seed: PerSeed,
                          source_accuracy: dict[str, dict[str, float]], *,
                          primary: Sequence[str], resamples: int,
                          seed_for: Callable[..., int]) -> tuple[dict[str, Any], dict[str, str]]:
    """The selection block of every ground truth of :data:`GROUND_TRUTHS` (``truths[g]``) and
    its weighted-tau table (Markdown).

    Per ground truth: :func:`selection_summary` of ``scores`` (the source-accuracy baseline
    added), the best estimator (:func:`best_estimator`), subsampling intervals against it
    (:func:`subsample_intervals`, seed ``seed_for("selection-intervals", g)``), the goal
    sentence (:func:`goal_sentence` over ``primary``), the evaluation protocol
    (:func:`protocol_evaluation`, seed ``seed_for("selection-protocol", g)``), and for full
    fine-tuning each seed's weighted tau (:func:`seed_taus`) and :func:`seed_agreement` of
    ``per_seed``."""
    targets = list(scores)
    all_methods = [*next(iter(scores.values())), "source_accuracy"]
    full_scores = {t: {**scores[t], "source_accuracy": source_accuracy[t]} for t in targets}
    by_truth = {g: selection_summary(scores, truths[g], source_accuracy) for g in GROUND_TRUTHS}
    tables: dict[str, str] = {}
    for g in GROUND_TRUTHS:
        table = by_truth[g]["weighted_tau"]
        against = best_estimator(table)
        ci = subsample_intervals(full_scores, truths[g], all_methods, against=against,
                                 resamples=resamples, seed=seed_for("selection-intervals", g))
        by_truth[g]["intervals"] = ci
        by_truth[g]["best_estimator"] = against
        by_truth[g]["goal"] = goal_sentence(table, against, primary)
        taus = seed_taus(full_scores, per_seed, all_methods) if g == "finetune" else None
        if taus is not None:
            by_truth[g]["per_seed_weighted_tau"] = taus
            by_truth[g]["seed_agreement"] = seed_agreement(per_seed)
        tables[g] = tau_table(table, ci, taus, against)
        by_truth[g]["protocol"] = protocol_evaluation(
            by_method(full_scores), truths[g], per_seed if g == "finetune" else None,
            resamples=resamples, seed=seed_for("selection-protocol", g))
    return by_truth, tables
