"""The run directory's lock: a second process on the same directory is refused and writes
nothing; the lock is released on exit, on an exception and on Ctrl-C; a new or empty directory
still works and the lock's dot-files never make a directory count as foreign."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from typer.testing import CliRunner

import advtransfer
from advtransfer.cli import app
from advtransfer.errors import AdvTransferError
from advtransfer.experiments import runner as runner_module
from advtransfer.experiments.registry import REGISTRY, Recipe
from advtransfer.store import LOCK_FILE, OWNER_FILE, Store
from tests.conftest import tunit

cli = CliRunner()
IN_USE = "is in use by another advtransfer process"
HOLDER = """
import sys
from advtransfer.store import Store
from tests.conftest import tunit
with Store(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
"""


def _names(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def _lock_is_free(directory: Path) -> bool:
    """Whether an independent FileLock (not the store's code) can take the lock at once."""
    lock = FileLock(directory / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def test_a_run_refused_by_another_process_writes_nothing_and_the_rerun_works(tmp_path, tiny):
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(advtransfer.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        held = _names(out)
        assert held == {LOCK_FILE, OWNER_FILE}
        refused = cli.invoke(app, [*tiny, "--out", str(out)])
        assert refused.exit_code == 1, refused.output
        assert f"{out} {IN_USE} (pid {holder.pid}, started " in refused.output
        assert "choose another --out" in refused.output
        assert _names(out) == held  # no run.json, records/, models/ or report
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _names(out) == {LOCK_FILE}  # the holder removed its owner file on exit
    rerun = cli.invoke(app, [*tiny, "--out", str(out)])
    assert rerun.exit_code == 0, rerun.output
    assert (out / "run.json").is_file() and (out / "report.md").is_file()
    assert OWNER_FILE not in _names(out) and _lock_is_free(out)


def test_the_lock_is_held_during_the_run_and_workers_without_it_still_write(tmp_path):
    out = tmp_path / "run"
    store = Store(out)
    with store.lock(timeout=0):
        assert not out.exists()  # nothing is created before the first unit
        store.record(tunit("unit", {"a": 1}), lambda: {"v": 1})
        assert not _lock_is_free(out)
        with pytest.raises(AdvTransferError, match=f"{IN_USE} \\(pid {os.getpid()}, started"):
            with Store(out).lock(timeout=0):
                pass  # pragma: no cover - never entered
        worker = Store(out)  # a worker computing units for the run takes no lock
        assert worker.record(tunit("unit", {"a": 2}), lambda: {"v": 2}) == {"v": 2}
    assert _lock_is_free(out) and not (out / OWNER_FILE).exists()
    assert Store(out).record(tunit("unit", {"a": 2}), lambda: {"v": 0}) == {"v": 2}


def test_two_processes_creating_the_same_new_directory_cannot_mix_configurations(tmp_path):
    out = tmp_path / "run"
    first, second = Store(out), Store(out)
    first.check_run({"recipe": "r", "config": {"epochs": 1}})
    second.check_run({"recipe": "r", "config": {"epochs": 2}})  # both see no directory yet
    with first.lock(timeout=0), second.lock(timeout=0):
        first.record(tunit("unit", {"a": 1}), lambda: {"v": 1})  # creates the directory, locked
        with pytest.raises(AdvTransferError, match=IN_USE):
            second.record(tunit("unit", {"a": 2}), lambda: {"v": 2})
    assert not second.record_path(tunit("unit", {"a": 2})).exists()
    # once the first run is over, the second one finds its run.json under the lock
    with pytest.raises(AdvTransferError, match="different configuration"), second.lock(timeout=0):
        second.record(tunit("unit", {"a": 2}), lambda: {"v": 2})
    assert not second.record_path(tunit("unit", {"a": 2})).exists()
    assert Store(out).record(tunit("unit", {"a": 1}), lambda: {"v": 0}) == {"v": 1}


@dataclasses.dataclass
class _FailConfig:
    seed: int = 0


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_after_an_exception_or_ctrl_c(tmp_path, monkeypatch, error):
    def fail(config: _FailConfig, ctx) -> dict:
        ctx.store.record(tunit("unit", {"a": 1}), lambda: {"v": 1})
        assert not _lock_is_free(tmp_path / "run")
        raise error("stop")

    monkeypatch.setitem(REGISTRY, "lock-test-fail", Recipe("lock-test-fail", _FailConfig, fail,
                                                           "fails after one unit"))
    with pytest.raises(error, match="stop"):
        runner_module.run("lock-test-fail", tmp_path / "run", progress=False)
    assert _lock_is_free(tmp_path / "run")
    assert not (tmp_path / "run" / OWNER_FILE).exists()


def test_an_empty_directory_or_one_holding_only_the_lock_file_is_not_foreign(tmp_path, tiny):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.invoke(app, [*tiny, "--out", str(empty)]).exit_code == 0
    leftover = tmp_path / "leftover"  # e.g. a run refused after taking the lock
    leftover.mkdir()
    (leftover / LOCK_FILE).touch()
    Store(leftover).check_run({"recipe": "r", "config": {}})  # accepted
    result = cli.invoke(app, [*tiny, "--out", str(leftover)])
    assert result.exit_code == 0, result.output
    assert (leftover / "report.md").is_file()


def test_report_waits_for_no_one_and_refuses_a_directory_in_use(tmp_path, tiny):
    """`advtransfer report DIR` takes the run lock: while another process holds it, the
    report is refused (exit 1) and report.md is left as it was; afterwards it is rewritten."""
    out = tmp_path / "run"
    assert cli.invoke(app, [*tiny, "--out", str(out)]).exit_code == 0
    before = (out / "report.md").read_bytes()
    (out / "report.md").write_text("stale")
    holder = FileLock(out / LOCK_FILE)
    holder.acquire()
    try:
        result = cli.invoke(app, ["report", str(out)])
        assert result.exit_code == 1 and "in use" in result.output
        assert (out / "report.md").read_text() == "stale"
    finally:
        holder.release()
    assert cli.invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "report.md").read_bytes() == before
