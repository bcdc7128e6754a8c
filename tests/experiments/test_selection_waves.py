"""The model-selection recipes run every unit on the executor (waves of RunContext.map), and
the analysis picks its best estimator among the feature/output estimators only."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from advtransfer.experiments import run
from advtransfer.experiments.selection_analysis import best_estimator, goal_sentence
from advtransfer.methods import ESTIMATOR_METHODS, GRADIENT_METHODS, POOL_METHODS


class Elsewhere:
    """An executor that runs each item as another process would: the function, the item and
    the shared values pickled (module-level functions only: no closure passes plain pickle),
    the result pickled back. Counts the items of each map by description."""

    name = "elsewhere"

    def __init__(self) -> None:
        self.items: Counter[str] = Counter()

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None, description: str = "units",
            progress: bool = False) -> list[Any]:
        self.items[description] += len(items)
        shared = pickle.loads(pickle.dumps(shared or {}))
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(item)), **shared)))
                for item in items]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_digits_model_selection_computes_no_unit_in_this_process(tmp_path, one_thread):
    """Every unit (sources, references, attacks, estimators, fine-tunes, probes, adversarial
    scores) is computed by the executor's items, and the results are those of the local
    run: the same units, the same records."""
    overrides = ['sources=["mlp32/digits10", "linear/digits10", "mlp32/untrained"]',
                 'targets=["ge5", "0-4"]', 'methods=["alpha1", "alpha2_s2t", "logme", '
                                           '"alpha1_logme_rankavg"]']
    local = run("digits-model-selection", tmp_path / "local", quick=True, progress=False,
                overrides=overrides)
    elsewhere = Elsewhere()
    moved = run("digits-model-selection", tmp_path / "elsewhere", quick=True, progress=False,
                overrides=overrides, executor=elsewhere)
    assert moved["unit_seconds"]["in_process"] == 0.0 < local["unit_seconds"]["in_process"]
    assert moved["units"] == local["units"] and moved["unit_files"] == local["unit_files"]
    assert moved["records"] == local["records"]
    assert moved["selection"]["weighted_tau"] == local["selection"]["weighted_tau"]
    assert elsewhere.items == {"sources": 3, "references": 2, "candidates": 6}
    # a grown pool: only the new source's units are computed, by the executor too, and the
    # old pairs keep their numbers (but the pool's rank average)
    grown = [o.replace('"mlp32/untrained"]', '"mlp32/untrained", "cnn8/ge5"]') for o in overrides]
    again = run("digits-model-selection", tmp_path / "elsewhere", quick=True, progress=False,
                overrides=grown, executor=Elsewhere())
    assert again["unit_seconds"]["in_process"] == 0.0 and again["units"]["computed"] > 0
    before = {(r["source"], r["target"]): r for r in moved["records"]}
    kept = [r for r in again["records"] if (r["source"], r["target"]) in before]
    assert len(kept) == len(before) == len(again["records"]) - 2
    for r in kept:
        old = before[(r["source"], r["target"])]
        assert {k: v for k, v in r.items() if k != "alpha1_logme_rankavg"} == {
            k: v for k, v in old.items() if k != "alpha1_logme_rankavg"}


def test_best_estimator_leaves_out_the_gradient_scores():
    """LGC is a gradient score, counted with the adversarial ones by the goal sentence: the best
    estimator is the best of the feature/output estimators, not LGC even when LGC is best."""
    table = {"lgc": {"mean": 0.9}, "logme": {"mean": 0.5}, "ncti": {"mean": 0.6},
             "alpha1": {"mean": 0.7}, "source_accuracy": {"mean": 0.8},
             "sfda": {"mean": math.nan}}
    eligible = [m for m in table if (m in ESTIMATOR_METHODS or m in POOL_METHODS)
                and m not in GRADIENT_METHODS]
    assert best_estimator(table) == max(
        eligible, key=lambda m: -math.inf if math.isnan(table[m]["mean"]) else table[m]["mean"])
    assert best_estimator(table) == "ncti"
    sentence = goal_sentence(table, best_estimator(table), ["lgc"])
    assert "Pre-registered lgc: 0.900, beats the best estimator ncti (0.600)" in sentence
    # no estimator in the table: the data-free baseline stands in
    assert best_estimator({"alpha1": {"mean": 0.1}, "lgc": {"mean": 0.2},
                           "source_accuracy": {"mean": 0.0}}) == "source_accuracy"
