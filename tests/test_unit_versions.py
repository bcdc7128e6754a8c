"""Unit kinds, their versions and the recorded fingerprints of their code (advtransfer.units).

The record (tests/unit_fingerprints.json) must match the code: a change to the code of a kind
at the same version fails here, with what to do; a version bump recomputes exactly the units
of that kind and the units built on them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from advtransfer import units
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.experiments.registry import RunContext
from advtransfer.experiments.stages import AccuracyUnit, TransferUnit
from advtransfer.store import Store
from advtransfer.units import unit_key

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "unit_fingerprints.json"


def _tool():
    spec = importlib.util.spec_from_file_location("unit_versions", ROOT / "tools" /
                                                  "unit_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recorded_fingerprints_match_the_code():
    tool = _tool()
    problems = tool.stale(json.loads(RECORD.read_text()), tool.current())
    bump = sorted(k for k, why in problems.items() if why == "bump")
    assert not bump, (
        f"the code of unit kind(s) {bump} changed but their version did not: bump the version "
        "in src/advtransfer/units.py (results may change), or record a change that cannot "
        "change any result with `python tools/unit_versions.py --write --same-results KIND`")
    assert not problems, (f"record the new versions/kinds {sorted(problems)}: "
                          "`python tools/unit_versions.py --write`")


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """The fingerprints computed over an editable copy of the package."""
    copy = tmp_path / "advtransfer"
    shutil.copytree(units._ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(units, "_ROOT", copy)
    caches = (units._modules, units._tree, units._module_digest, units.code_modules,
              units._config_class_names, units._builders)
    for cache in caches:
        cache.cache_clear()
    yield copy
    for cache in caches:
        cache.cache_clear()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_code_change_at_the_same_version_is_caught_and_a_docstring_change_is_not(
        package_copy):
    tool = _tool()
    before = tool.current()
    # a docstring, a comment and formatting: no result can change, nothing to bump
    _edit(package_copy / "training.py", '"""', '"""Reworded. ')
    _edit(package_copy / "knowledge.py", "\n", "\n# a comment\n\n")
    for cache in (units._tree, units._module_digest, units.code_modules):
        cache.cache_clear()
    assert tool.current() == before
    # a change of what the synthetic recipe's measurements compute
    _edit(package_copy / "theory.py", "def gradient_matching_distance(",
          "def _unused() -> int:\n    return 1\n\n\ndef gradient_matching_distance(")
    for cache in (units._tree, units._module_digest, units.code_modules):
        cache.cache_clear()
    problems = tool.stale(before, tool.current())
    assert set(problems.values()) == {"bump"}
    assert {"synthetic-source", "synthetic-target"} <= set(problems)
    assert all("advtransfer.theory" in units.code_modules(k) for k in problems)
    assert not {"transfer", "taskonomy-matrix", "zoo-finetune"} & set(problems)
    assert tool.main(["--write"]) == 1  # refused without a bump (the record is not touched)


def test_a_recipe_preparing_the_data_of_a_shared_stage_is_in_that_kinds_fingerprint(
        package_copy):
    """digits-distribution stores its reference attack through stages.reference_attack (it
    never names ReferenceAttackUnit): a change of the inputs it prepares must still bump the
    reference-attack and adversarial kinds."""
    tool = _tool()
    before = tool.current()
    _edit(package_copy / "experiments" / "recipes" / "digits_distribution.py",
          "    x_attack = target.x_test\n", "    x_attack = target.x_test[:100]\n")
    for cache in (units._tree, units._module_digest, units.code_modules,
                  units._config_class_names, units._builders):
        cache.cache_clear()
    problems = tool.stale(before, tool.current())
    assert {"reference-attack", "adversarial", "accuracy", "transfer"} <= set(problems)
    assert "text-snapped" not in problems


def test_every_kind_names_the_code_that_stores_it():
    for name in units.PACKAGE_KINDS:
        modules = units.code_modules(name)
        assert "advtransfer.store" in modules, name
        assert not set(modules) & units.PRESENTATION, name
    assert "advtransfer.experiments.recipes.synthetic" in units.code_modules("synthetic-source")
    assert "advtransfer.estimators.logme" in units.code_modules("selection-estimators")


def test_an_undeclared_kind_is_refused():
    with pytest.raises(AdvTransferError, match="not declared.*units.KINDS"):
        unit_key("no-such-kind", {})


def test_the_key_holds_the_version(monkeypatch):
    unit = TransferUnit(source="s", target="t")
    key = unit.key
    kind = units.KINDS["transfer"]
    monkeypatch.setitem(units.KINDS, "transfer", units.UnitKind(kind.name, kind.version + 1,
                                                                 kind.doc))
    assert unit.key != key


def test_a_package_kind_takes_only_its_typed_configuration():
    """Every package kind has one UnitConfig class; a plain dict or another kind's config is
    refused, and the key holds every field, defaults included."""
    from advtransfer.experiments.recipes import load

    load()  # declares every recipe's unit configurations

    assert sorted(units.CONFIGS.keys() & set(units.PACKAGE_KINDS)) == sorted(units.PACKAGE_KINDS)
    with pytest.raises(AdvTransferTypeError, match="'transfer' unit is configured by "
                                                   "TransferUnit; got dict"):
        unit_key("transfer", {"source": "s", "target": "t"})
    with pytest.raises(AdvTransferTypeError, match="'direct-accuracy' unit is configured by "
                                                   "DirectAccuracyUnit; got AccuracyUnit"):
        unit_key("direct-accuracy", AccuracyUnit(model="m", data="d"))
    from advtransfer.experiments.recipes.cifar_stl import DirectAccuracyUnit

    with pytest.raises(AdvTransferTypeError, match="configures 'direct-accuracy' units, not "
                                                   "'accuracy'"):
        unit_key("accuracy", DirectAccuracyUnit(model="m", data="d"))  # a subclass
    with pytest.raises(AdvTransferError, match=r"\['seed'\] name UnitConfig's own"):
        @dataclass(frozen=True, kw_only=True)
        class Seeded(units.UnitConfig):
            seed: int = 0
    unit = TransferUnit(source="s", target="t")
    assert unit.as_dict() == {"source": "s", "target": "t", "task": "classification",
                              "features": None, "finetune": "head", "epoch": "last",
                              "epochs": 10, "lr": 0.1, "weight_decay": 0.0, "batch_size": 128,
                              "augment": False}
    assert TransferUnit(source="s", target="t", epochs=11).key != unit.key
    assert TransferUnit(source="s", target="t", epochs=10).seed == unit.seed


def test_seeds_do_not_depend_on_dict_order(tmp_path):
    ctx = RunContext(store=Store(tmp_path / "r"), device=__import__("torch").device("cpu"),
                     progress=False)
    a = ctx.seed_for("transfer", {"lr": 0.1, "epochs": 3, "inner": {"x": 1, "y": 2}})
    b = ctx.seed_for("transfer", {"inner": {"y": 2, "x": 1}, "epochs": 3, "lr": 0.1})
    assert a == b
    assert a != ctx.seed_for("transfer", {"lr": 0.1, "epochs": 4, "inner": {"x": 1, "y": 2}})


def _files(out: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in [*out.glob("records/*.json"), *out.glob("models/*.safetensors")]:
        found.setdefault(path.name.rsplit("-", 1)[0], set()).add(path.name)
    return found


def test_a_bumped_version_recomputes_its_units_and_their_dependants_only(tmp_path, monkeypatch):
    from advtransfer.experiments.runner import run

    out = tmp_path / "run"
    first = run("synthetic", out, quick=True, progress=False)
    n_sources = len(first["records"])
    before = _files(out)
    assert len(before["synthetic-target"]) == 1 and len(before["synthetic-source"]) == n_sources

    def bump(name: str) -> None:
        kind = units.KINDS[name]
        monkeypatch.setitem(units.KINDS, name, units.UnitKind(name, kind.version + 1, kind.doc))

    bump("synthetic-source")  # the sources only: the target is reused
    second = run("synthetic", out, quick=True, progress=False)
    assert second["units"] == {"computed": n_sources, "reused": 1}
    assert second["records"] == first["records"]  # same code, same numbers
    bump("synthetic-target")  # the target and every source built on it
    third = run("synthetic", out, quick=True, progress=False)
    assert third["units"] == {"computed": n_sources + 1, "reused": 0}
    assert _files(out)["synthetic-source"] > before["synthetic-source"]
