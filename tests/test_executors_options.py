"""Executors without a running Ray: the resources per task (checks, defaults, the CLI options),
what a worker receives for tensors and devices, and who shuts a Ray down (a fake ``ray``
module records the calls)."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import math
import sys
import types

import pytest
import torch
from typer.testing import CliRunner

from advtransfer import executors
from advtransfer.errors import AdvTransferError
from advtransfer.executors import (
    LocalExecutor,
    RayExecutor,
    _DeviceType,
    _from_store,
    _shared_to_store,
    _to_store,
    check_resources,
    close,
    get_executor,
)

pytest.importorskip("ray", reason="RayExecutor needs Ray installed (make test installs it)")


@pytest.mark.parametrize(("num_cpus", "num_gpus", "message"), [
    (0, None, "num_cpus must be > 0"), (-1, None, "num_cpus must be > 0"),
    (math.nan, None, "num_cpus must be > 0"), (True, None, "num_cpus must be > 0"),
    (1e-5, None, "at most 4 decimals"), (1, -0.5, "num_gpus must be >= 0"),
    (1, math.inf, "num_gpus must be >= 0"), (1, "1", "num_gpus must be >= 0"),
])
def test_bad_resources_are_refused_naming_the_parameter(num_cpus, num_gpus, message):
    with pytest.raises(AdvTransferError, match=message):
        RayExecutor(num_cpus=num_cpus, num_gpus=num_gpus)
    with pytest.raises(AdvTransferError, match=message):
        get_executor("ray", num_cpus=num_cpus, num_gpus=num_gpus)


def test_fractional_resources_are_kept_and_gpus_default_to_cuda_here(monkeypatch):
    ex = get_executor("ray", num_cpus=0.5, num_gpus=0.25)
    assert (ex.num_cpus, ex.num_gpus) == (0.5, 0.25)
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert RayExecutor().num_gpus == float(cuda)
        assert get_executor("ray").num_gpus == float(cuda)
    assert RayExecutor(num_gpus=0).num_gpus == 0


def test_resources_are_refused_with_the_local_executor_and_an_executor_object():
    for name in ("num_cpus", "num_gpus"):
        with pytest.raises(AdvTransferError, match=f"{name} is for executor='ray'"):
            get_executor("local", **{name: 1})
        with pytest.raises(AdvTransferError, match="set them on an executor object"):
            get_executor(LocalExecutor(), **{name: 1})
    with pytest.raises(AdvTransferError, match="--num-cpus must be > 0"):
        check_resources(0, None, names=("--num-cpus", "--num-gpus"))


@pytest.mark.parametrize("command", ["run", "rank"])
def test_the_cli_options_need_executor_ray_and_valid_values(command, tmp_path):
    """--num-cpus/--num-gpus with the local executor, or out of range: usage errors (exit 2)
    naming the option, before anything is loaded or written."""
    from advtransfer.cli import app

    head = (["run", "digits-model-selection", "--quick", "--out", str(tmp_path / "run")]
            if command == "run" else ["rank", "--reference", "digits-mlp", "-c", "digits-mlp"])
    for extra, message in (
            (["--num-cpus", "2"], "--num-cpus is for --executor ray"),
            (["--num-gpus", "0"], "--num-gpus is for --executor ray"),
            (["--executor", "ray", "--num-cpus", "0"], "--num-cpus must be > 0"),
            (["--executor", "ray", "--num-gpus", "-1"], "--num-gpus must be >= 0")):
        result = CliRunner().invoke(app, [*head, *extra, "--quiet", "--threads", "1"])
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "run").exists()


def test_tensors_travel_as_arrays_and_come_back_with_their_dtype_shape_and_values():
    """Every NumPy dtype round-trips (also inside tuples, lists and dicts, and from a
    non-contiguous view); a tensor NumPy cannot hold (bfloat16) or one with a gradient stays a
    tensor; other values are untouched."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    tensors = [base.to(d) for d in (torch.float32, torch.float16, torch.int64, torch.uint8,
                                    torch.bool)] + [base.t(), base[:, ::2]]
    stored = _to_store({"list": tensors, "pair": (tensors[0], "text"), "n": 3})
    assert all(isinstance(v, executors._Array) for v in stored["list"])
    back = _from_store(stored, has_gpu=False)
    for got, want in zip(back["list"], tensors, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
    assert back["pair"][1] == "text" and back["n"] == 3 and isinstance(back["pair"], tuple)
    odd = [base.bfloat16(), base.clone().requires_grad_()]
    assert [v is w for v, w in zip(_to_store(odd), odd, strict=True)] == [True, True]


def test_a_worker_gets_the_device_type_never_the_drivers_index():
    """'cuda:1' (the key "device", as rank and the recipes pass it) and torch.device('cuda', 3)
    become the worker's 'cuda' when its task holds a GPU, else the CPU; 'cpu' stays the CPU;
    strings under other keys are not devices."""
    shared = {"device": "cuda:1", "where": torch.device("cuda", 3), "name": "cuda:1"}
    stored = _shared_to_store(shared)
    assert stored["device"] == _DeviceType("cuda", text=True)
    assert stored["where"] == _DeviceType("cuda", text=False) and stored["name"] == "cuda:1"
    with_gpu = _from_store(stored, has_gpu=True)
    assert (with_gpu["device"], with_gpu["where"]) == ("cuda", torch.device("cuda"))
    without = _from_store(stored, has_gpu=False)
    assert (without["device"], without["where"]) == ("cpu", torch.device("cpu"))
    cpu = _from_store(_shared_to_store({"device": "cpu"}), has_gpu=True)
    assert cpu["device"] == "cpu"
    assert _shared_to_store({"device": "not a device"})["device"] == "not a device"


class FakeRay(types.ModuleType):
    """A ``ray`` module that records init and shutdown (nothing is started)."""

    def __init__(self, running: bool) -> None:
        super().__init__("ray")
        self.__spec__ = importlib.machinery.ModuleSpec("ray", None)
        self.running, self.inits, self.shutdowns = running, [], 0

    def is_initialized(self) -> bool:
        return self.running

    def init(self, **kwargs) -> None:
        self.inits.append(kwargs)
        self.running = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.running = False


def test_close_shuts_down_only_a_ray_it_started_and_twice_is_harmless(monkeypatch):
    fake = FakeRay(running=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    ex = RayExecutor()
    ex.close()  # before any work: nothing started, nothing to do
    ex.connect()
    assert fake.inits[0]["log_to_driver"] is True and fake.inits[0]["address"] is None
    ex.close()
    close(ex)
    assert fake.shutdowns == 1 and not fake.running
    theirs = FakeRay(running=True)  # a user's Ray, already initialised
    monkeypatch.setitem(sys.modules, "ray", theirs)
    ex = RayExecutor()
    ex.connect()
    ex.close()
    assert theirs.inits == [] and theirs.shutdowns == 0 and theirs.running


def test_a_recipe_run_closes_its_executor_also_when_it_fails(monkeypatch, tmp_path):
    """runner.execute calls the executor's close() in a finally: after a run and after a run
    that raises."""
    from advtransfer.experiments import runner

    closed = []

    class Closing(LocalExecutor):
        def close(self) -> None:
            closed.append(True)

    p = runner.plan("synthetic", tmp_path / "run", quick=True)
    p = dataclasses.replace(p, executor=Closing())
    monkeypatch.setattr(runner, "_execute", lambda plan, progress: {"ok": True})
    assert runner.execute(p, progress=False) == {"ok": True} and closed == [True]

    def boom(plan, progress):
        raise AdvTransferError("boom")

    monkeypatch.setattr(runner, "_execute", boom)
    with pytest.raises(AdvTransferError, match="boom"):
        runner.execute(p, progress=False)
    assert closed == [True, True]


def test_rank_closes_the_executor_it_made_and_never_one_it_was_given(monkeypatch):
    """rank(executor="ray") shuts down the Ray it started (also when it fails); an executor
    object handed to it is the caller's to close."""
    from advtransfer import selection

    made, closed = [], []

    class Closing(LocalExecutor):
        def close(self) -> None:
            closed.append(self)

    class Failing(Closing):
        def map(self, *args, **kwargs):
            raise AdvTransferError("a unit failed")

    def fake_get(executor, address=None, **_):
        made.append(Failing() if fail else Closing())
        return made[-1]

    monkeypatch.setattr(selection, "get_executor", fake_get)
    x, y = torch.rand(24, 4), torch.arange(24) % 2
    pool = {"a": torch.nn.Linear(4, 3), "b": torch.nn.Linear(4, 3)}
    fail = False
    selection.rank(pool, (x, y), None, methods=["logme"], executor="ray")
    assert closed == made and len(made) == 1
    fail = True
    with pytest.raises(AdvTransferError, match="a unit failed"):
        selection.rank(pool, (x, y), None, methods=["logme"], executor="ray")
    assert closed == made and len(made) == 2
    mine = Closing()
    monkeypatch.setattr(selection, "get_executor", lambda executor, address=None: executor)
    selection.rank(pool, (x, y), None, methods=["logme"], executor=mine)
    assert mine not in closed
