"""Cost of each model-selection method per candidate, as ratios measured in one run.

On the digits pool of the ``digits-model-selection`` recipe (target: digits {0..4}, reference a
small CNN trained on it), every method is timed per candidate (median of ``--repeats`` after a
warm-up) and reported as ratios to LogME's cost and to fine-tuning that candidate:

* ``adversarial (pair)``: alpha1/alpha2/combined in both directions for one candidate alone
  (the reference attacked for it: 2 attacks);
* ``adversarial (pool)``: the whole pool in one :func:`advtransfer.selection.rank` call (the
  reference attacked once for all candidates), divided by the pool size;
* ``adversarial (pool, cheap)``: the same with ``--cheap-steps`` PGD steps on
  ``--cheap-samples`` inputs (default 2 x 64; on this pool the rankings are about as good as
  with 10 x 256, see the report of the ``digits-model-selection`` recipe);
* ``adversarial on features (pool)``: the ``*_features`` methods (alpha on the candidates'
  penultimate features) for the whole pool, divided by the pool size;
* each estimator (every one :func:`advtransfer.selection.rank` offers; PED around LogME and
  SFDA; NCTI and ETran: their raw parts for one candidate, the pool normalisation being
  negligible): one forward pass over the target training set plus the estimator itself; LGC:
  the per-sample gradients of all parameters and the correlation;
* ``finetune (head)``: the recipe's ground truth, a linear head on the penultimate features
  (30 epochs, the authors' setting); ``finetune (full)``: the whole network, 30 epochs.

The goal: the adversarial estimators cost at most 1/20 of fine-tuning. Usage::

    python benchmarks/bench_selection.py [--repeats 3] [--threads 1] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from advtransfer.experiments.recipes.model_selection import (
    DEFAULT_DIGITS_SOURCES,
    parse_source,
    source_data,
    target_data,
)
from advtransfer.knowledge import knowledge_transfer
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    BASE_FEATURE_METHODS,
    GRADIENT_METHODS,
    OUTPUT_METHODS,
    POOL_METHODS,
)
from advtransfer.models import create
from advtransfer.selection import candidate_outputs, estimator_scores, gradient_scores, rank
from advtransfer.training import fit

ADV = [m for m in ADVERSARIAL_METHODS
       if m.endswith(("_t2s", "_s2t")) and m not in ADVERSARIAL_FEATURE_METHODS]
#: Every estimator (a pooled one's cost is that of its raw parts for one candidate) and PED
#: around the two estimators the recipes report it with.
ESTIMATORS = [*BASE_FEATURE_METHODS, *OUTPUT_METHODS, *POOL_METHODS, *GRADIENT_METHODS,
              "ped_logme", "ped_sfda"]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (allocations, first-call overheads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_pool(specs: list[str], epochs: int) -> dict[str, torch.nn.Module]:
    pool = {}
    for i, spec in enumerate(specs):
        src = parse_source(spec)
        train, _, n_cls = source_data(src, test_fraction=0.3, seed=0)
        torch.manual_seed(i)
        model = create(f"digits:{src.arch}", "random", n_cls)
        if src.task != "untrained":
            fit(model, train, epochs=epochs, lr=0.01, optimizer="adam", seed=i)
        pool[spec] = model.eval()
    return pool


def run(*, repeats: int, quick: bool, attack_samples: int, steps: int, cheap_samples: int,
        cheap_steps: int, finetune_epochs: int) -> dict[str, Any]:
    specs = (["mlp64/digits10", "cnn16/digits10", "linear/digits10", "lenet/digits10/noisy"]
             if quick else list(DEFAULT_DIGITS_SOURCES))
    pool = _train_pool(specs, epochs=3 if quick else 10)
    train, test, n_cls = target_data("0-4", test_fraction=0.3, seed=0)
    torch.manual_seed(100)
    reference = fit(create("digits:cnn16", "random", n_cls), train, epochs=3 if quick else 10,
                    lr=0.01, optimizer="adam").eval()
    attack = {"eps": 1.0, "steps": steps, "attack_samples": attack_samples}

    costs: dict[str, dict[str, float]] = {}
    cheap = {"eps": 1.0, "steps": cheap_steps, "attack_samples": cheap_samples}
    pool_time = _median_time(lambda: rank(pool, test, reference, methods=ADV, **attack),
                             repeats)
    cheap_time = _median_time(lambda: rank(pool, test, reference, methods=ADV, **cheap),
                              repeats)
    feature_time = _median_time(lambda: rank(pool, test, reference,
                                             methods=list(ADVERSARIAL_FEATURE_METHODS), **attack),
                                repeats)
    for name, model in pool.items():
        c: dict[str, float] = {}
        c["adversarial (pair)"] = _median_time(
            lambda model=model, name=name: rank({name: model}, test, reference, methods=ADV,
                                                **attack), repeats)
        c["adversarial (pool)"] = pool_time / len(pool)
        c["adversarial (pool, cheap)"] = cheap_time / len(pool)
        c["adversarial on features (pool)"] = feature_time / len(pool)
        c["forward pass"] = _median_time(lambda model=model: candidate_outputs(model, train),
                                         repeats)
        outs = candidate_outputs(model, train)
        for est in ESTIMATORS:
            if est in GRADIENT_METHODS:  # its own passes (per-sample gradients), no features
                c[est] = _median_time(lambda model=model, est=est: gradient_scores(
                    model, train, [est]), repeats)
                continue
            parts = list(POOL_METHODS.get(est, [est]))
            c[est] = c["forward pass"] + _median_time(
                lambda parts=parts, outs=outs: estimator_scores(outs, parts), repeats)
        c["finetune (head)"] = _median_time(
            lambda model=model: knowledge_transfer(model, train, test, features="penultimate",
                                                   epochs=finetune_epochs, seed=0), repeats)
        c["finetune (full)"] = _median_time(
            lambda model=model: knowledge_transfer(model, train, test, features="penultimate",
                                                   finetune="full", epochs=finetune_epochs,
                                                   lr=0.01, seed=0), repeats)
        costs[name] = c

    methods = list(next(iter(costs.values())))
    summary: dict[str, dict[str, float]] = {}
    for m in methods:
        per = {n: costs[n][m] for n in costs}
        summary[m] = {
            "seconds_median": statistics.median(per.values()),
            "x_logme": statistics.median(per[n] / costs[n]["logme"] for n in costs),
            "of_finetune_head": statistics.median(per[n] / costs[n]["finetune (head)"]
                                                  for n in costs),
            "of_finetune_full": statistics.median(per[n] / costs[n]["finetune (full)"]
                                                  for n in costs),
        }
    adv_rows = ("adversarial (pair)", "adversarial (pool)", "adversarial (pool, cheap)",
                "adversarial on features (pool)")
    goal = {k: summary[k]["of_finetune_head"] <= 1 / 20 for k in adv_rows}
    goal_full = {k: summary[k]["of_finetune_full"] <= 1 / 20 for k in adv_rows}
    return {"settings": {"candidates": len(pool), "repeats": repeats, "target": "digits 0-4",
                         "n_target_train": len(train[0]), "n_target_test": len(test[0]),
                         "finetune_epochs": finetune_epochs, "threads": torch.get_num_threads(),
                         "cheap_steps": cheap_steps, "cheap_samples": cheap_samples, **attack},
            "summary": summary, "per_candidate": costs,
            "goal_1_20_of_head_finetune": goal, "goal_1_20_of_full_finetune": goal_full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 candidates, 1 repeat")
    parser.add_argument("--attack-samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cheap-samples", type=int, default=64)
    parser.add_argument("--cheap-steps", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 gives stable "
                             "timings on a busy machine")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(repeats=1 if args.quick else args.repeats, quick=args.quick,
                 attack_samples=args.attack_samples, steps=args.steps,
                 cheap_samples=args.cheap_samples, cheap_steps=args.cheap_steps,
                 finetune_epochs=args.finetune_epochs)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s = result["settings"]
    table = Table(title=f"model-selection cost per candidate ({s['candidates']} digits "
                        f"candidates, target {s['target']}: {s['n_target_train']} train / "
                        f"{s['n_target_test']} test; attack {s['steps']} steps on "
                        f"{s['attack_samples']} inputs; median of {s['repeats']})")
    for col in ("method", "s / candidate", "x LogME", "/ finetune (head)",
                "/ finetune (full)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, row in result["summary"].items():
        table.add_row(m, f"{row['seconds_median']:.4f}", f"{row['x_logme']:.2f}",
                      f"{row['of_finetune_head']:.3f}", f"{row['of_finetune_full']:.3f}")
    console = Console()
    console.print(table)
    for key, label in (("goal_1_20_of_head_finetune", "head"),
                       ("goal_1_20_of_full_finetune", "full")):
        for k, ok in result[key].items():
            console.print(f"goal {k} <= 1/20 of {label} fine-tuning: "
                          + ("[green]met[/]" if ok else "[red]not met[/]"))


if __name__ == "__main__":
    main()
