"""One name per method: every table, plot and README table shows a method by the label
:func:`advtransfer.methods.method_label` gives its id, and no other module spells one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from advtransfer.experiments.recipes.model_selection import DIGITS_METHODS, _labels
from advtransfer.experiments.recipes.synthetic import PAPER_LABELS
from advtransfer.experiments.stages import alpha_labels
from advtransfer.methods import (
    ADVERSARIAL_FEATURE_METHODS,
    ADVERSARIAL_METHODS,
    DEPRECATED_METHODS,
    METHODS,
    RANK_AVERAGE_METHODS,
    method_label,
)
from tests.test_readme import README, _tool

SRC = Path(__file__).resolve().parents[1] / "src" / "advtransfer"


def _meaning(method: str) -> object:
    """What a method computes: aliases (alpha1 and alpha1_t2s, a former name and its new one)
    mean the same."""
    method = DEPRECATED_METHODS.get(method, method)
    if method in ADVERSARIAL_METHODS:
        return (*ADVERSARIAL_METHODS[method], method in ADVERSARIAL_FEATURE_METHODS)
    if method in RANK_AVERAGE_METHODS:
        return tuple(_meaning(m) for m in RANK_AVERAGE_METHODS[method])
    return method


def test_labels_are_one_to_one_with_what_a_method_computes() -> None:
    for a in METHODS:
        for b in METHODS:
            assert (method_label(a) == method_label(b)) == (_meaning(a) == _meaning(b)), (a, b)
    assert method_label("alpha1_s2t") == "alpha1 (source -> target)"
    assert method_label("alpha1_features") == "alpha1 (features, target -> source)"
    assert method_label("regularized_hscore") == "regularized H-score"
    assert method_label("alpha2_s2t", squared=True) == "alpha2² (source -> target)"
    assert method_label("a_recipe_column") == "a_recipe_column"


def test_every_recipe_labels_its_methods_with_the_one_label() -> None:
    for convention, squared in (("icml", False), ("authors", True)):
        for key, text in alpha_labels(convention).items():
            assert text == method_label(key, squared=squared)
    selection = _labels(list(DIGITS_METHODS), "finetune")
    assert all(selection[m] == method_label(m) for m in DIGITS_METHODS)
    # the authors' column names stay in results.csv (to compare with their files); the labels
    # are the library's
    for column, method in (("alpha_S_T", "alpha1_s2t"), ("gamma_T_S", "alpha2_t2s"),
                           ("alpha_gamma_combined_S_T", "combined_s2t")):
        assert PAPER_LABELS[column] == method_label(method)


def test_readme_tables_name_methods_by_their_label() -> None:
    labels = {method_label(m) for m in METHODS}
    blocks = list(_tool().BLOCK.finditer(README.read_text()))
    assert blocks
    checked = 0
    for block in blocks:
        for line in block["body"].splitlines():
            first = line.split(" | ")[0].removeprefix("| ").removesuffix(" (pre-registered)")
            assert first not in METHODS or first == method_label(first), (block["name"], line)
            checked += first in labels
    assert checked >= 40  # the five method tables and the digits-distribution table


@pytest.mark.parametrize("spelling", [r"\(source -> target\)", r"S→T", r"target→source",
                                      r"shrinkage H-score"])
def test_no_module_but_methods_spells_a_method_label(spelling: str) -> None:
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "methods.py" and re.search(spelling, p.read_text())]
    assert offenders == []


def test_terminal_summary_names_methods_by_their_label(capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from advtransfer import cli

    results = {
        "recipe": "r", "report": {"metrics": ["alpha1_s2t", "regularized_hscore"],
                                  "outcomes": ["transfer_accuracy"],
                                  "labels": {"alpha1_s2t": method_label("alpha1_s2t"),
                                             "regularized_hscore": "regularized H-score"}},
        "records": [{"source": "a", "transfer_accuracy": 0.9, "alpha1_s2t": 0.5,
                     "regularized_hscore": 1.25}],
        "correlations": [{"metric": "regularized_hscore", "outcome": "transfer_accuracy",
                          "n": 5, "pearson_r": 0.5, "pearson_p": 0.4, "spearman_rho": 0.4,
                          "spearman_p": 0.5}]}
    monkeypatch.setattr(cli.console, "width", 80)
    cli._print_summary(results)
    out = capsys.readouterr().out
    assert "regularized H-score" in out and "regularized_hscore" not in out
    assert "(source ->" in out and "alpha1_s2t" not in out
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
