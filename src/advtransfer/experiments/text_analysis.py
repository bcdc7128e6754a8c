r"""The analysis of a ``text-datasets`` run and its text: the target x source matrices of the
pair records, the Mantel tests of each alpha against both transfer accuracies, the
model-selection benchmark over each target's pool of sources, and the report's tables,
sentences and entry.

Every function here works on finished records (one per ordered (target, source) pair) and the
run's read-only settings (:class:`TextRun`); nothing here computes a stored unit. The recipe,
:mod:`advtransfer.experiments.recipes.text_datasets`, computes the records and calls
:func:`results`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from advtransfer.data.text import TEXT_DATASETS
from advtransfer.experiments.selection_analysis import (
    analyse_ground_truths,
    num,
    protocol_table,
)
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    COMBINED_METHODS,
    method_label,
    needed_methods,
)
from advtransfer.selection import combine
from advtransfer.stats import mantel, within_group_table

__all__ = [
    "ALPHAS",
    "OUTCOMES",
    "TextRun",
    "TextTaskInfo",
    "mantel_tests",
    "matrix",
    "report_spec",
    "results",
    "select",
    "selection_scores",
    "shows",
    "snapped_text",
]

#: The six alpha fields of a record, t2s (attack crafted on the target's reference, applied
#: to the source) first.
ALPHAS: tuple[str, ...] = tuple(f"{m}_{d}" for d in ("t2s", "s2t")
                                for m in ("alpha1", "alpha2", "combined"))
#: The two transfer accuracies of a record: a new linear head, full fine-tuning.
OUTCOMES: tuple[str, ...] = ("head_accuracy", "full_accuracy")


class TextTaskInfo(Protocol):
    """What the analysis reads of one dataset (the recipe's ``TextTask``)."""

    @property
    def classes(self) -> int:
        """The number of classes."""
        ...

    @property
    def size(self) -> int:
        """The number of examples of the file."""
        ...


class TextRun(Protocol):
    """What the analysis reads of a run (the recipe's shared state, read-only): ``c`` the
    recipe's configuration (``TextDatasetsConfig``), ``tasks`` each dataset's
    :class:`TextTaskInfo`, ``emb_key`` the key of the shared embedding table's unit."""

    @property
    def c(self) -> Any:
        """The recipe's configuration."""
        ...

    @property
    def tasks(self) -> Mapping[str, TextTaskInfo]:
        """Each configured dataset's task."""
        ...

    @property
    def emb_key(self) -> str:
        """The key of the embedding table's unit."""
        ...


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


def matrix(datasets: list[str], records: list[dict[str, Any]], controls: list[dict[str, Any]],
            key: str) -> list[list[float | None]]:
    """``M[T][S]``: ``key`` of the pair (target T, source S); the diagonal the first control
    (None without one)."""
    where = {(r["target"], r["source_dataset"]): r for r in records}
    where.update({(r["target"], r["target"]): r for r in controls if r["source_seed"] == 1})
    out = []
    for t in datasets:
        row = []
        for src in datasets:
            v = where.get((t, src), {}).get(key)
            row.append(float(v) if v is not None and math.isfinite(float(v)) else None)
        out.append(row)
    return out


def mantel_tests(datasets: list[str], matrices: dict[str, list[list[float | None]]],
            seed: int) -> list[dict[str, Any]]:
    """Spearman's rho of each alpha with each transfer accuracy over the ordered pairs of
    different datasets and its two-sided Mantel p-value (:func:`advtransfer.stats.mantel`;
    exact over all permutations of the datasets, as there are at most 6)."""
    rows = []
    for metric in ALPHAS:
        for outcome in OUTCOMES:
            a = np.array(matrices[metric], dtype=float)
            b = np.array(matrices[outcome], dtype=float)
            r = mantel(a, b, method="spearman", seed=seed).to_dict()
            rows.append({"metric": metric, "outcome": outcome, **r})
    return rows


def _wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion ``p`` of ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def selection_scores(s: TextRun, records: list[dict[str, Any]]
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """``scores[target][method][candidate]`` of every method of ``methods`` (output-space
    alphas from the pairs' adversarial units, the others from their selection units, the
    combinations over each target's pool)."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for t in s.c.datasets:
        per: dict[str, dict[str, float]] = {}
        for r in (r for r in records if r["target"] == t):
            for m in needed_methods(s.c.methods):
                if m in ADVERSARIAL_METHODS and m not in ADVERSARIAL_FEATURE_METHODS:
                    metric, direction = ADVERSARIAL_METHODS[m]
                    per.setdefault(m, {})[r["source_model"]] = num(r[f"{metric}_{direction}"])
                elif m in r["selection_scores"]:
                    per.setdefault(m, {})[r["source_model"]] = r["selection_scores"][m]
        for m in needed_methods(s.c.methods):
            if m in COMBINED_METHODS:
                per[m] = combine(m, per)
        scores[t] = {m: per[m] for m in s.c.methods}
    return scores


def select(s: TextRun, pool: list[dict[str, Any]], accuracies: dict[str, float],
           seed_for: Callable[..., int]) -> tuple[dict[str, Any], dict[str, str]]:
    """The selection benchmark over each target's ``pool`` (records): every method against
    full fine-tuning (headline) and the linear head, with the digits benchmarks' analysis
    (``seed_for`` the run's :meth:`~advtransfer.experiments.registry.RunContext.seed_for`)."""
    scores = selection_scores(s, pool)
    truths: dict[str, dict[str, dict[str, float]]] = {"finetune": {}, "linear_probe": {}}
    per_seed: dict[str, dict[str, list[float]]] = {}
    source_acc: dict[str, dict[str, float]] = {}
    for r in pool:
        t, name = r["target"], r["source_model"]
        truths["finetune"].setdefault(t, {})[name] = float(r["full_accuracy"])
        truths["linear_probe"].setdefault(t, {})[name] = float(r["head_accuracy"])
        per_seed.setdefault(t, {})[name] = [float(r["full_accuracy"])]
        source_acc.setdefault(t, {})[name] = accuracies[name]
    by_truth, tables = analyse_ground_truths(
        scores, truths, per_seed, source_acc, primary=s.c.primary, resamples=s.c.resamples,
        seed_for=seed_for)
    selection = {**by_truth["finetune"], "by_ground_truth": by_truth, "scores": scores}
    return selection, tables


# --------------------------------------------------------------------------------------------
# report text
# --------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals, "—" for None or a non-finite value."""
    return f"{float(v):.{digits}f}" if v is not None and math.isfinite(float(v)) else "—"


def _models_table(s: TextRun, models: list[dict[str, Any]], targets: dict[str, Any]) -> str:
    """Per dataset: task, classes, the reference's test accuracy (Wilson interval), the
    controls' accuracies, chance, the reference attack's flip rate and the median text norm."""
    from advtransfer.report import md_table

    rows = []
    for d in s.c.datasets:
        mine = [m for m in models if m["dataset"] == d]
        ref = mine[0]
        lo, hi = _wilson(ref["accuracy"], ref["n_test"])
        t = targets[d]
        rows.append([d, TEXT_DATASETS[d].task, str(s.tasks[d].classes),
                     f"{_f(ref['accuracy'])} [{_f(lo, 2)}, {_f(hi, 2)}]",
                     " / ".join(_f(m["accuracy"]) for m in mine[1:]) or "—",
                     _f(1 / s.tasks[d].classes, 2), _f(t["flip_rate"], 2),
                     _f(t["median_input_norm"], 2)])
    return md_table(["dataset", "task", "classes", "reference test accuracy [95 % Wilson]",
                     "controls' accuracy", "chance", "flip rate at eps",
                     "median text norm"], rows)


def _mantel_table(rows: list[dict[str, Any]]) -> str:
    """The Mantel tests of :func:`mantel_tests` as a Markdown table."""
    from advtransfer.report import md_table

    return md_table(["alpha", "transfer", "Spearman rho", "Mantel p", "ordered pairs",
                     "permutations"],
                    [[method_label(r["metric"].replace("_t2s", "")), r["outcome"],
                      _f(r["statistic"]), _f(r["p"]), str(r["n_pairs"]),
                      f"{r['n_permutations']}{' (exact)' if r['exact'] else ''}"]
                     for r in rows])


def _controls_table(controls: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    """Per control: its alpha1 (t2s) and full transfer accuracy, and its rank by each among
    all the sources of its target (1 = highest)."""
    from advtransfer.report import md_table

    rows = []
    for r in controls:
        pool = [x for x in records if x["target"] == r["target"]] + [r]

        def rank(key: str, r: dict[str, Any] = r, pool: list = pool) -> str:
            vals = sorted((num(x[key]) for x in pool), reverse=True)
            return f"{vals.index(num(r[key])) + 1}/{len(pool)}" if math.isfinite(
                num(r[key])) else "—"

        rows.append([r["source"], _f(r["alpha1_t2s"]), rank("alpha1_t2s"),
                     _f(r["full_accuracy"]), rank("full_accuracy"), _f(r["head_accuracy"])])
    return md_table(["control", "alpha1 (t2s)", "its rank", "full fine-tuning accuracy",
                     "its rank", "head accuracy"], rows)


def _verdict(rho: float | None, p: float | None) -> str:
    """A Spearman rho and its Mantel p in words (strength, sign, significance)."""
    if rho is None or p is None or not math.isfinite(rho):
        return "undefined"
    strength = "weak" if abs(rho) < 0.3 else "moderate" if abs(rho) < 0.6 else "strong"
    sign = "positive" if rho > 0 else "negative"
    clear = "significant" if p < 0.05 else "not significant"
    return f"{strength} {sign}, {clear} (rho {rho:.2f}, Mantel p {p:.3g})"


def shows(s: TextRun, mantel_rows: list[dict[str, Any]], within: list[dict[str, Any]],
           selection: dict[str, Any], models: list[dict[str, Any]]) -> str:
    """The "what this shows / does not show" paragraph, from the run's numbers."""
    get = {(r["metric"], r["outcome"]): r for r in mantel_rows}
    lines = [f"alpha1 (target -> source) vs {label}: " + _verdict(
        get[("alpha1_t2s", outcome)]["statistic"], get[("alpha1_t2s", outcome)]["p"])
        for outcome, label in (("full_accuracy", "full fine-tuning accuracy"),
                               ("head_accuracy", "head accuracy"))]
    w = {(r["metric"], r["outcome"]): r for r in within}.get(("alpha1_t2s", "full_accuracy"))
    if w is not None:
        lines.append(f"within targets (across the sources of one target) r_w = {_f(w['r'], 2)}"
                     f" (permutation p {_f(w['p'], 3)}, n = {w['n']} in {w['groups']} targets)")
    tau = selection["weighted_tau"]
    best = selection.get("best_estimator", "")
    if "alpha1" in tau and best in tau:
        lines.append(f"mean weighted tau of alpha1 against full fine-tuning "
                     f"{_f(tau['alpha1']['mean'])}, best estimator {method_label(best)} "
                     f"{_f(tau[best]['mean'])}")
    chance = [m["dataset"] for m in models if m["seed"] == 0
              and m["accuracy"] < 1 / s.tasks[m["dataset"]].classes + 0.1]
    near = (f" The reference models of {', '.join(chance)} are within 10 points of chance, so "
            "their alphas compare near-random functions." if chance else "")
    return (
        "**What this shows / does not show.** " + "; ".join(lines) + ". A weak or negative "
        "correlation is a finding about this setting, not a failed run: the paper predicts "
        "positive ones." + near + " The association is over " + str(len(s.c.datasets)) +
        " datasets only (one model per dataset, one split, one training seed per source), so "
        "one unusual dataset can carry it; it says nothing about causation. It does not "
        "reproduce the authors' BERT setting: here every model reads one frozen, shared "
        f"{s.c.embedding} embedding table ({s.c.embed_dim} dimensions, whole words, no subword "
        f"tokenizer, texts cut to {s.c.max_len} tokens) that makes the input space exactly "
        f"common, the models are small {s.c.architecture} networks trained from scratch on "
        f"{round(100 * s.c.split[0])} % of the examples of each file (at most 1,000; BERT "
        "is pretrained and fine-tuned, and its embeddings drift per dataset), and the attack "
        "is an L2 PGD on the continuous embeddings"
        + (" (the snapped word-substitution attack is reported beside it)."
           if s.c.attack == "snapped" else
           " rather than the authors' snapped Carlini-Wagner attack (attack=\"snapped\")."))


def _description(s: TextRun, info: dict[str, Any]) -> str:
    """The report's description: the setting, the models, Mantel and controls tables, the
    selection benchmark (and the snapped attack), then the "what this shows" paragraph."""
    c = s.c
    parts = [
        "Datasets: " + ", ".join(f"{d} ({s.tasks[d].size} examples)" for d in c.datasets)
        + f", each split {c.split} (train / validation / test, stratified, seed "
        f"{c.split_seed}). Shared vocabulary of {info['vocab']} words (min_count "
        f"{c.min_count}); one frozen {c.embedding} embedding table of {c.embed_dim} "
        f"dimensions; texts cut to {c.max_len} tokens. Models: {c.architecture}, {c.seeds} "
        f"per dataset ({c.epochs} epochs, Adam lr {c.lr}); seed 0 is each dataset's "
        "reference and source model, the others are same-dataset controls. Knowledge "
        "transfer on the target's training split: a new linear head on the source's "
        f"penultimate features ({c.head_epochs} epochs, SGD lr {c.head_lr}) and full "
        f"fine-tuning with a new head ({c.full_epochs} epochs, SGD lr {c.full_lr}), tested "
        f"on the target's test split. Adversarial transferability: {c.solver} {c.norm} "
        f"eps={c.eps} in embedding units (padding masked, the L2 norm per sequence over its "
        f"tokens), {c.objective} objective, {c.steps} steps, on {info['n_attack']} test "
        "texts of each target; t2s = crafted on the target's reference, applied to the "
        "source, s2t the reverse.",
        _models_table(s, info["models"], info["targets"]),
        f"**Mantel tests** over the {info['n_pairs']} ordered pairs of different datasets "
        "(dataset labels permuted jointly on rows and columns; the pairs share datasets, so "
        "the pooled correlation table below treats them as independent and its p-values are "
        "too small):", _mantel_table(info["mantel"])]
    if info["controls"]:
        parts += ["**Controls** (same dataset, other seed; not in the records):",
                  _controls_table(info["controls"], info["records"])]
    pool = "the other datasets' models" + (" and the target's controls" if c.control_in_pool
                                           else "")
    parts += [f"**Model selection**: each target's pool ({pool}) ranked by every method "
              f"against full fine-tuning accuracy; weighted Kendall tau per target and mean, "
              f"interval over {c.resamples} draws of 80 % of the candidates:",
              info["tables"]["finetune"], info["selection"].get("goal", ""),
              "Protocol measures (against full fine-tuning):",
              protocol_table(info["selection"]["protocol"]),
              "Against the linear head:", info["tables"]["linear_probe"]]
    if c.attack == "snapped":
        parts.append(info["snapped_text"])
    parts.append(info["shows"])
    return "\n\n".join(p for p in parts if p)


def snapped_text(s: TextRun, targets: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The report's paragraph on the snapped attack (``attack="snapped"``): tokens changed and
    success per target, and the snapped alphas' Mantel tests against full fine-tuning."""
    from advtransfer.report import md_table

    rows = [[t, _f(targets[t]["snapped_changed"], 1), _f(targets[t]["snapped_success"], 2)]
            for t in s.c.datasets]
    corr = {}
    for key in ("snapped_alpha1_t2s", "snapped_combined_t2s"):
        a = np.array(matrix(s.c.datasets, records, [], key), dtype=float)
        f = np.array(matrix(s.c.datasets, records, [], "full_accuracy"), dtype=float)
        corr[key] = mantel(a, f, method="spearman", seed=s.c.seed).to_dict()
    return ("**Snapped attack** (the authors' word-substitution attack, first "
            f"{s.c.snapped_samples} attacked texts, {s.c.snapped_steps} steps): tokens changed "
            "and success rate of each reference's attack:\n\n"
            + md_table(["target", "mean tokens changed", "success"], rows)
            + "\n\nSpearman rho with full fine-tuning accuracy (Mantel p): "
            + "; ".join(f"{k.removeprefix('snapped_')}: {_f(v['statistic'])} "
                        f"({_f(v['p'])})" for k, v in corr.items()) + ".")


def results(s: TextRun, models: list[dict[str, Any]], targets: dict[str, Any],
            every: list[dict[str, Any]], n_vocab: int, seed_for: Callable[..., int]
            ) -> dict[str, Any]:
    """The run's results (records, controls, models, targets, matrices, Mantel tests,
    within-target correlations, selection benchmark, report entry) from its finished ``models``
    (wave 2), ``targets`` (wave 3) and pair records ``every`` (wave 4); ``n_vocab`` the
    vocabulary's size, ``seed_for`` the run's seed derivation."""
    c = s.c
    records = [r for r in every if r["pair"] == "cross"]
    controls = [r for r in every if r["pair"] == "control"]
    keys = [*ALPHAS, *OUTCOMES] + (
        [f"snapped_{a}" for a in ALPHAS] if c.attack == "snapped" else [])
    matrices = {k: matrix(c.datasets, records, controls, k) for k in keys}
    mantel_rows = mantel_tests(c.datasets, matrices, c.seed)
    within = within_group_table(records, list(ALPHAS), list(OUTCOMES), "target", seed=c.seed)
    accuracies = {m["name"]: m["accuracy"] for m in models}
    selection, tables = select(s, records + (controls if c.control_in_pool else []),
                               accuracies, seed_for)
    info = {"vocab": n_vocab, "models": models, "targets": targets, "mantel": mantel_rows,
            "n_pairs": len(records), "n_attack": targets[c.datasets[0]]["n_attack"],
            "controls": controls, "records": records, "selection": selection,
            "tables": tables,
            "shows": shows(s, mantel_rows, within, selection, models)}
    if c.attack == "snapped":
        info["snapped_text"] = snapped_text(s, targets, records)
    flat = [{k: v for k, v in r.items() if k != "selection_scores"} for r in records]
    return {
        "records": flat,
        "controls": [{k: v for k, v in r.items() if k != "selection_scores"}
                     for r in controls],
        "models": models, "targets": targets, "vocabulary_size": n_vocab,
        "embedding_unit": s.emb_key, "mantel": mantel_rows, "within_target": within,
        "text_matrices": {k: {"rows": "target dataset", "columns": "source dataset",
                              "diagonal": "first same-dataset control", "names": c.datasets,
                              "values": v} for k, v in matrices.items()},
        # heatmaps of the report, each naming its rows (targets) and columns (sources)
        "matrices": {k: {"names": c.datasets, "values": matrices[k], "rows": "target dataset",
                         "columns": "source model (its dataset)"}
                     for k in ("alpha1_t2s", "alpha2_t2s", "combined_t2s", *OUTCOMES)},
        "selection": selection,
        "report": report_spec(s, info),
    }


def report_spec(s: TextRun, info: dict[str, Any]) -> dict[str, Any]:
    """The run's report entry (title, description, metrics, outcomes, labels, columns) from
    the pieces of :func:`results` (``info``)."""
    c = s.c
    labels = {f"{m}_{d}": f"{m} ({'target -> source' if d == 't2s' else 'source -> target'})"
              for m in ("alpha1", "alpha2", "combined") for d in ("t2s", "s2t")}
    labels.update({"head_accuracy": "head transfer accuracy (new linear head)",
                   "full_accuracy": "full fine-tuning accuracy", "target": "target dataset"})
    return {
        "title": "text-datasets: adversarial and knowledge transferability between the "
                 "authors' six text datasets",
        "description": _description(s, info),
        "metrics": list(ALPHAS),
        "outcomes": list(OUTCOMES),
        "sweep": None,
        "groups": "target",
        "labels": labels,
        "columns": ["source", "target", "head_accuracy", "full_accuracy", *ALPHAS,
                    *(["snapped_alpha1_t2s", "snapped_changed_source"]
                      if c.attack == "snapped" else [])],
    }
