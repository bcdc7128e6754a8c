from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from advtransfer import AdvTransferError, AdvTransferWarning
from advtransfer.experiments.config import apply, parse_override
from advtransfer.experiments.runner import resolve
from advtransfer.store import Store
from advtransfer.units import unit_key
from tests.conftest import tunit


@dataclass
class Cfg:
    seed: int = 0
    lr: float = 0.1
    name: str = "a"
    flag: bool = False
    shares: list[float] = field(default_factory=lambda: [0.0, 1.0])


def test_apply_checks_types_and_keys():
    c = apply(Cfg(), {"lr": 1, "shares": [0, 0.5], "flag": True}, source="t")
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.shares == [0.0, 0.5] and c.flag
    with pytest.raises(AdvTransferError, match=r"unknown configuration key\(s\) \['lrr'\].*lr"):
        apply(Cfg(), {"lrr": 1}, source="t")
    with pytest.raises(AdvTransferError, match="seed must be an integer"):
        apply(Cfg(), {"seed": "x"}, source="t")
    with pytest.raises(AdvTransferError, match="flag must be true or false"):
        apply(Cfg(), {"flag": 1}, source="t")
    with pytest.raises(AdvTransferError, match=r"shares\[1\] must be a number"):
        apply(Cfg(), {"shares": [0, "x"]}, source="t")


def test_parse_override():
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("shares=[0, 0.5]") == ("shares", [0, 0.5])
    assert parse_override("name=resnet") == ("name", "resnet")
    assert parse_override('name="a b"') == ("name", "a b")
    with pytest.raises(AdvTransferError, match="key=value"):
        parse_override("novalue")


def test_resolve_toml_and_errors(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "digits-distribution"\nepochs = 2\nshares = [0.0, 1.0]\n')
    recipe, config = resolve(str(toml), ["steps=1"], seed=5)
    assert recipe.name == "digits-distribution"
    assert (config.epochs, config.shares, config.steps, config.seed) == (2, [0.0, 1.0], 1, 5)
    toml.write_text('recipe = "digits-distribution"\nepochs = "two"\n')
    with pytest.raises(AdvTransferError, match="epochs must be an integer"):
        resolve(str(toml))
    toml.write_text("epochs = 2\n")
    with pytest.raises(AdvTransferError, match="recipe"):
        resolve(str(toml))
    with pytest.raises(AdvTransferError, match="unknown recipe 'digits-distributon'.*Did you"):
        resolve("digits-distributon")


def test_store_reuses_and_keys_by_config(tmp_path):
    store = Store(tmp_path)
    calls = []
    assert store.record(tunit("k", {"a": 1}), lambda: calls.append(1) or {"v": 1.5}) == {"v": 1.5}
    again = Store(tmp_path).record(tunit("k", {"a": 1}), lambda: calls.append(1) or {"v": 9})
    assert again == {"v": 1.5}
    assert store.record(tunit("k", {"a": 2}), lambda: calls.append(1) or {"v": 2}) == {"v": 2}
    assert len(calls) == 2
    assert unit_key("k", tunit("k", {"a": 1, "b": 2})) == tunit("k", {"b": 2, "a": 1}).key
    assert not list(tmp_path.rglob("*.tmp"))

    model = store.model(tunit("m", {"w": 1}), lambda: torch.nn.Linear(2, 2),
                        lambda m: m.requires_grad_(False) or m)
    again = Store(tmp_path).model(tunit("m", {"w": 1}), lambda: torch.nn.Linear(2, 2),
                                  lambda m: pytest.fail("must not retrain"))
    torch.testing.assert_close(model.weight, again.weight)


def test_store_refuses_other_configuration_and_keeps_files(tmp_path):
    store = Store(tmp_path)
    store.check_run({"recipe": "r", "config": {"epochs": 1}})
    store.record(tunit("k", {}), lambda: {"v": 1})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(AdvTransferError, match=r"different configuration.*config\.epochs"):
        Store(tmp_path).check_run({"recipe": "r", "config": {"epochs": 2}})
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    Store(tmp_path).check_run({"recipe": "r", "config": {"epochs": 1}})  # same: resumes


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AdvTransferError, match="not a writable directory"):
        Store(blocker / "run")


def test_store_ignores_record_with_other_config_under_same_key(tmp_path):
    store = Store(tmp_path)
    path = store.record_path(tunit("k", {"a": 1}))
    path.parent.mkdir()  # opening a store creates nothing
    path.write_text(json.dumps({"kind": "k", "config": {"a": 999}, "result": {"v": 0}}))
    assert store.record(tunit("k", {"a": 1}), lambda: {"v": 1}) == {"v": 1}


def test_recipe_module_map_lists_every_registered_recipe():
    from advtransfer.experiments.recipes import MODULES
    from advtransfer.experiments.registry import all_recipes

    assert sorted(r.name for r in all_recipes()) == sorted(MODULES)


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    # results and checkpoints must be readable by colleagues sharing a run directory
    import os

    from torch import nn

    from advtransfer.fileio import write_json
    from advtransfer.models.checkpoint import save_model

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        save_model(nn.Linear(2, 2), tmp_path / "m.safetensors")
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "r.json", 0o640)
        write_json(tmp_path / "r.json", {"a": 2})
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
        os.umask(0o077)
        write_json(tmp_path / "private.json", {})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


def test_run_json_records_the_environment_and_a_resume_elsewhere_is_said(tmp_path):
    from advtransfer.experiments.runner import environment, execute, plan

    out = tmp_path / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = execute(plan("synthetic", out, quick=True), progress=False)
        recorded = json.loads((out / "run.json").read_text())["environment"]
        assert recorded == environment(torch.device("cpu")) and recorded["threads"] == 1
        with warnings.catch_warnings():  # same place: silent
            warnings.simplefilter("error", AdvTransferWarning)
            execute(plan("synthetic", out, quick=True), progress=False)
        torch.set_num_threads(2)  # reported only: threads change the order of reductions
        with pytest.warns(AdvTransferWarning,
                          match=r"another environment.*threads 1 then, 2 now.*reused"):
            again = execute(plan("synthetic", out, quick=True), progress=False)
        assert again["records"] == first["records"]  # the stored units, as computed then
        # the identity check ignores the environment: the run is still the same run
        assert json.loads((out / "run.json").read_text())["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_finished_run_of_other_code_is_rerun_reusing_its_units(tmp_path, monkeypatch):
    """A finished run is returned as it is only to the same code; other code reruns the recipe
    (rewriting results and report), which reuses the units whose kinds kept their versions
    (tests/test_unit_versions.py: a changed computation must bump its kind's version)."""
    from advtransfer import store
    from advtransfer.experiments.runner import run

    out = tmp_path / "run"
    first = run("synthetic", out, quick=True, progress=False)
    assert first["code"] == store.code_fingerprint() and first["units"]["computed"] > 0
    same = run("synthetic", out, quick=True, progress=False)
    assert same["wall_time_s"] == first["wall_time_s"]  # returned as it was
    monkeypatch.setattr(store, "_source_digest", lambda: "as if the package had been edited")
    assert store.code_fingerprint() != first["code"]
    other = run("synthetic", out, quick=True, progress=False)
    assert other["wall_time_s"] != first["wall_time_s"]  # rerun
    assert other["units"] == {"computed": 0, "reused": first["units"]["computed"]}
    assert other["records"] == first["records"]


def test_code_fingerprint_follows_every_module_of_the_package(tmp_path, monkeypatch):
    import shutil

    from advtransfer import store

    copy = tmp_path / "advtransfer"
    shutil.copytree(Path(store.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(store, "__file__", str(copy / "store.py"))
    store._source_digest.cache_clear()
    try:
        before = store.code_fingerprint()
        store._source_digest.cache_clear()
        path = copy / "estimators" / "logme.py"
        path.write_text(path.read_text() + "\n# a change\n")
        assert store.code_fingerprint() != before
    finally:
        store._source_digest.cache_clear()


def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_run(tmp_path):
    from advtransfer.experiments.runner import execute, plan

    out = tmp_path / "run"
    first = execute(plan("synthetic", out, quick=True), progress=False)
    record = next((out / "records").glob("*.json"))
    # what a writer killed between its write and its rename leaves (fileio.atomic_write_with)
    leftovers = [out / "records" / f".{record.name}.k3x9.tmp", out / ".results.json.a1b2.tmp"]
    for path in leftovers:
        path.write_text('{"truncat')
    with pytest.warns(AdvTransferWarning, match=r"removed 2 temporary file\(s\)"):
        again = execute(plan("synthetic", out, quick=True), progress=False)
    assert not any(p.exists() for p in leftovers)
    assert again["records"] == first["records"] and record.exists()


def test_a_unit_that_cannot_be_written_is_refused_before_it_is_computed(tmp_path, monkeypatch):
    """A folder that cannot be written (a read-only mount; root can write anywhere else, so
    os.access is what is asked) refuses the unit before its work: compute is never called."""
    store = Store(tmp_path / "run")
    assert store.record(tunit("k", {"a": 1}), lambda: {"v": 1}) == {"v": 1}
    calls = []
    readonly = str(tmp_path / "run")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(readonly)
                        and real(p, mode))
    for compute in (lambda: store.record(tunit("k", {"a": 2}),
                                         lambda: calls.append(1) or {"v": 2}),
                    lambda: store.model(tunit("m", {"w": 2}), lambda: torch.nn.Linear(2, 2),
                                        lambda m: calls.append(1) or m),
                    lambda: store.records([(tunit("k", {"a": 3}), 3)], lambda p: calls.append(p)
                                          or {"v": p})):
        with pytest.raises(AdvTransferError, match="is not writable, so this (k|m) unit would "
                           "be computed and lost; nothing was computed"):
            compute()
    assert calls == []
    assert store.record(tunit("k", {"a": 1}), lambda: {"v": 9}) == {"v": 1}  # reading still works
