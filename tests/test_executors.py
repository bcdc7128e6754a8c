"""Executors: rank and the store's per-candidate units give the same numbers in this process and
as Ray tasks (2 local workers), also when a worker is killed with SIGKILL mid-run."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from advtransfer import selection
from advtransfer.data.digits import digits
from advtransfer.errors import AdvTransferError
from advtransfer.executors import LocalExecutor, RayExecutor, get_executor
from advtransfer.executors import close as close_executor
from advtransfer.experiments.stages import AccuracyUnit
from advtransfer.models.architectures import digits_mlp
from advtransfer.store import Store


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs (this machine's cores); this module's functions are shipped to
    the workers by value (the workers do not import the tests package). Workers and this
    process compute with 1 torch thread, so training reduces in the same order on both sides
    and the numbers can be compared exactly."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                            "'advtransfer[ray]' (make test installs it)")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    ray.shutdown()


def build_mlp(seed: int) -> torch.nn.Module:
    """A candidate builder: a random digits MLP (10 classes) seeded by ``seed``."""
    torch.manual_seed(seed)
    return digits_mlp(10, hidden=24).eval()


def build_or_die(seed: int, marker: str) -> torch.nn.Module:
    """Like :func:`build_mlp`, but the first call (no ``marker`` file yet) kills its own
    process with SIGKILL, as an out-of-memory killer or a lost machine would."""
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return build_mlp(seed)


@pytest.fixture(scope="module")
def task():
    split = digits(seed=0).subset([0, 1, 2, 3, 4])
    ref = build_mlp(7)
    return (split.x_test, split.y_test), ref


def _pool(n: int) -> dict:
    return {f"c{i}": functools.partial(build_mlp, 100 + i) for i in range(n)}


KW = {"methods": ["alpha1", "alpha2_s2t", "logme", "leep"], "steps": 3, "attack_samples": 48,
      "batch_size": 32, "seed": 3}


def test_rank_on_ray_gives_the_numbers_of_the_local_run(local_ray, task):
    data, ref = task
    local = selection.rank(_pool(4), data, ref, **KW)
    on_ray = selection.rank(_pool(4), data, ref, executor="ray", **KW)
    assert on_ray.config["executor"] == "ray" and local.config["executor"] == "local"
    for m in KW["methods"]:
        assert on_ray.scores[m] == pytest.approx(local.scores[m], rel=1e-6), m


@pytest.mark.slow  # a Ray worker killed and replaced: seconds of worker start-up
def test_a_worker_killed_mid_run_is_retried_with_the_same_numbers(local_ray, task, tmp_path):
    data, ref = task
    marker = tmp_path / "killed-once"
    pool = _pool(4)
    pool["c2"] = functools.partial(build_or_die, 102, str(marker))
    on_ray = selection.rank(pool, data, ref, executor=RayExecutor(max_retries=2), **KW)
    assert marker.exists()  # the worker building c2 really was killed once
    assert int(marker.read_text()) != os.getpid()
    local = selection.rank(_pool(4), data, ref, **KW)
    for m in KW["methods"]:
        assert on_ray.scores[m] == pytest.approx(local.scores[m], rel=1e-6), m


def _unit(payload: tuple[int, str | None]) -> dict:
    seed, marker = payload
    model = build_or_die(seed, marker) if marker else build_mlp(seed)
    x = torch.linspace(0, 1, 64).reshape(1, 64)
    return {"out": model(x).sum().item()}


@pytest.mark.slow  # a Ray worker killed and replaced: seconds of worker start-up
def test_store_units_written_by_killed_and_live_ray_workers(local_ray, tmp_path):
    """Store.records on Ray: every unit is written by the worker that computed it (a killed
    worker's unit is retried), the results equal the local ones, and a rerun computes
    nothing."""
    marker = tmp_path / "killed-once"
    # a package kind's configuration: the workers import the package, not the tests
    units = [(AccuracyUnit(model=f"m{s}", data="d"), (s, str(marker) if s == 2 else None))
             for s in range(4)]
    store = Store(tmp_path / "run")
    got = store.records(units, _unit, executor=RayExecutor(max_retries=2))
    assert marker.exists()
    assert store.misses == 4
    expected = [_unit((s, None)) for s in range(4)]
    assert [g["out"] for g in got] == pytest.approx([e["out"] for e in expected], rel=1e-6)
    again = Store(tmp_path / "run")
    assert again.records(units, _unit, executor=LocalExecutor()) == got
    assert (again.hits, again.misses) == (4, 0)


class CountingRay(RayExecutor):
    """A RayExecutor that counts its puts into the object store."""

    puts = 0

    def _put(self, ray, value):
        self.puts += 1
        return ray.put(value)


def _probe(i: int, *, x: torch.Tensor, y: torch.Tensor, device: str, where: torch.device,
           meta: dict) -> dict:
    """What a unit sees of the shared values; unit 1 also raises a warning."""
    if i == 1:
        warnings.warn(f"unit {i} says careful", RuntimeWarning, stacklevel=1)
    return {"sum": (x * (i + 1)).sum().item(), "label_sum": int(y.sum()) * i,
            "dtypes": (x.dtype, y.dtype), "shapes": (tuple(x.shape), tuple(y.shape)),
            "device": device, "where": where, "meta": meta, "threads": torch.get_num_threads()}


def test_shared_values_each_put_once_read_in_place_with_the_local_numbers(local_ray):
    """Each shared value is one object (plus ``fn``), whatever the number of tasks; a tensor
    arrives with its dtype, shape and values, a device as this worker's (no GPU here: the
    CPU, never the driver's index), and the numbers equal the local executor's; a task's
    warning is raised in this process; the torch threads are int(max(1, num_cpus)). A tensor
    read back from the store is a view of the store's (read-only) memory, not a copy."""
    import ray

    from advtransfer.executors import _from_store, _to_store

    gen = torch.Generator().manual_seed(0)
    # 200 kB: above Ray's inline limit (100 kB), so the array lives in the shared store
    shared = {"x": torch.rand(400, 64, generator=gen, dtype=torch.float64),
              "y": torch.randint(0, 10, (5,), generator=gen), "device": "cuda:1",
              "where": torch.device("cuda", 1), "meta": {"k": [1, 2]}}
    items = list(range(4))
    with pytest.warns(RuntimeWarning, match="unit 1 says careful"):
        local = LocalExecutor().map(_probe, items, shared=shared)
    ex = CountingRay(num_cpus=2)
    with pytest.warns(RuntimeWarning, match="unit 1 says careful"):
        on_ray = ex.map(_probe, items, shared=shared)
    assert ex.puts == 1 + len(shared) and ex.worker_seconds > 0
    for got, want in zip(on_ray, local, strict=True):
        assert (got["device"], got["where"]) == ("cpu", torch.device("cpu"))
        assert got["threads"] == 2
        for key in ("sum", "label_sum", "dtypes", "shapes", "meta"):
            assert got[key] == want[key], key
    half = RayExecutor(num_cpus=0.5).map(_probe, [0], shared=shared)
    assert half[0]["threads"] == 1
    stored = ray.get(ray.put(_to_store(shared["x"])))
    back = _from_store(stored, has_gpu=False)
    assert not stored.array.flags.writeable and back.data_ptr() == stored.array.ctypes.data
    assert torch.equal(back, shared["x"])


def _fail_first(i: int, *, marks: str) -> int:
    """Unit 0 fails at once; the others would take a minute, then leave a file."""
    if i == 0:
        raise ValueError("unit zero is broken\nand this line is not shown")
    time.sleep(60)
    Path(marks, f"done-{i}").write_text("")
    return i


def _all_cpus_free(ray, timeout: float = 20.0) -> bool:
    total = ray.cluster_resources()["CPU"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ray.available_resources().get("CPU", 0) == total:
            return True
        time.sleep(0.2)
    return False


def test_the_first_failure_cancels_every_other_task_and_is_one_line(local_ray, tmp_path):
    """A unit raising is one AdvTransferError line (its index and item, the exception's type
    and message's first line), raised at once; the running and queued tasks are cancelled
    (every CPU is free again, none of them finishes)."""
    import ray

    start = time.monotonic()
    with pytest.raises(AdvTransferError) as info:
        RayExecutor().map(_fail_first, range(5), shared={"marks": str(tmp_path)})
    assert time.monotonic() - start < 30
    assert str(info.value) == "unit 0 of 5 (0) failed on Ray: ValueError: unit zero is broken"
    assert _all_cpus_free(ray)
    assert not list(tmp_path.iterdir())


def test_a_failing_unit_in_the_cli_is_exit_1_with_one_line(local_ray, tmp_path):
    """`advtransfer rank --executor ray` with a candidate whose weights cannot be read (found
    in its task): exit 1, one `error:` line naming that candidate's unit, no traceback."""
    import ray
    from typer.testing import CliRunner

    from advtransfer.cli import app

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    result = CliRunner().invoke(app, [
        "rank", "--reference", "digits-mlp", "-c", "digits-linear", "-c", f"digits-mlp={bad}",
        "--methods", "logme", "--quiet", "--threads", "1", "--executor", "ray"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: unit 1 of 2 (('digits-mlp'") and "Traceback" not in \
        result.stderr
    assert "failed on Ray: AdvTransferError: " in lines[-1] and str(bad) in lines[-1]
    assert _all_cpus_free(ray) and ray.is_initialized()  # not ours: left running


def _always_die(i: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return i


@pytest.mark.slow  # two Ray workers killed and replaced: seconds of worker start-up
def test_a_worker_dying_at_every_try_is_one_line_once_the_retries_are_spent(local_ray):
    with pytest.raises(AdvTransferError) as info:
        RayExecutor(max_retries=1).map(_always_die, ["only"])
    text = str(info.value)
    assert "\n" not in text and text.startswith("unit 0 of 1 ('only') failed on Ray: ")
    assert "WorkerCrashedError" in text and "max_retries=1 exhausted" in text


def test_close_leaves_a_ray_it_did_not_start_running(local_ray):
    import ray

    ex = RayExecutor()
    ex.connect()
    ex.close()
    close_executor(ex)
    assert ray.is_initialized()


def test_executor_names_are_checked():
    with pytest.raises(AdvTransferError, match="executor must be one of"):
        get_executor("dask")
    with pytest.raises(AdvTransferError, match="address is for executor='ray'"):
        get_executor("local", address="localhost:6379")
    with pytest.raises(AdvTransferError, match="num_cpus must be > 0"):
        RayExecutor(num_cpus=0)


def test_ray_missing_is_said_before_any_work(monkeypatch, tmp_path):
    """Without Ray, executor='ray' is refused when the executor is made: rank reads no data
    and a recipe run writes nothing."""
    import importlib.util

    from advtransfer.experiments.runner import run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(AdvTransferError, match=r"pip install 'advtransfer\[ray\]'"):
        get_executor("ray")
    with pytest.raises(AdvTransferError, match="needs Ray"):
        run("synthetic", tmp_path / "run", quick=True, progress=False, executor="ray")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a recipe end to end once more, with the Ray option
def test_a_recipe_run_on_ray_matches_the_local_run_and_resumes_locally(local_ray, tmp_path):
    """`advtransfer run digits-model-selection --executor ray`: the candidates' units are
    written by the Ray workers into the run directory, the numbers equal an in-process run's,
    and a rerun (in process) computes nothing."""
    from advtransfer.experiments.runner import run

    overrides = ['targets=["ge5"]', 'methods=["alpha1", "alpha2_s2t", "logme"]']
    on_ray = run("digits-model-selection", tmp_path / "ray", quick=True, progress=False,
                 overrides=overrides, executor="ray")
    local = run("digits-model-selection", tmp_path / "local", quick=True, progress=False,
                overrides=overrides)
    assert on_ray["executor"] == "ray"

    def scores(result):
        return {(r["source"], m): r[m] for r in result["records"]
                for m in ("alpha1", "alpha2_s2t", "logme")}

    assert scores(on_ray) == pytest.approx(scores(local), rel=1e-6)
    again = run("digits-model-selection", tmp_path / "ray", quick=True, progress=False,
                overrides=overrides)
    assert again["units"]["computed"] == 0


@pytest.mark.slow
def test_a_paper_recipe_on_ray_matches_the_local_run(local_ray, tmp_path):
    """digits-distribution with --executor ray: each source's training, fine-tune and
    measurement run on a Ray worker (the reference's attack once, in the driver); the records
    equal the in-process run's, every unit counts once, and a rerun computes nothing."""
    from advtransfer.experiments.runner import run

    on_ray = run("digits-distribution", tmp_path / "ray", quick=True, progress=False,
                 executor="ray")
    local = run("digits-distribution", tmp_path / "local", quick=True, progress=False)
    keys = ("transfer_accuracy", "alpha1_t2s", "alpha2_t2s", "alpha1_s2t")
    assert [r["source"] for r in on_ray["records"]] == [r["source"] for r in local["records"]]
    assert [r[k] for r in on_ray["records"] for k in keys] == pytest.approx(
        [r[k] for r in local["records"] for k in keys], rel=1e-6)
    assert on_ray["units"] == local["units"]
    again = run("digits-distribution", tmp_path / "ray", quick=True, progress=False,
                executor="ray")
    assert again["units"]["computed"] == 0


@pytest.mark.slow
def test_the_cifar_stl_recipe_on_ray_matches_the_local_run(local_ray, tmp_path):
    """cifar10-stl10-architectures (--quick, fixture files in the datasets' formats) with each
    source on a Ray worker: the same records as in process."""
    from advtransfer.data.fixtures import write_cifar10, write_stl10
    from advtransfer.experiments.runner import run

    root = tmp_path / "data"
    write_cifar10(root, n_train=200, n_test=100)
    write_stl10(root, n_train=120, n_test=100)
    overrides = [f'data_root="{root}"']
    on_ray = run("cifar10-stl10-architectures", tmp_path / "ray", quick=True, progress=False,
                 overrides=overrides, executor="ray")
    local = run("cifar10-stl10-architectures", tmp_path / "local", quick=True, progress=False,
                overrides=overrides)
    keys = ("source_accuracy", "transfer_accuracy", "alpha1_t2s", "alpha1_s2t", "combined_t2s")
    assert [r["source"] for r in on_ray["records"]] == [r["source"] for r in local["records"]]
    assert [r[k] for r in on_ray["records"] for k in keys] == pytest.approx(
        [r[k] for r in local["records"] for k in keys], rel=1e-6)
    assert on_ray["units"] == local["units"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two Ray nodes started and stopped: about a minute
def test_the_readmes_cluster_steps_on_two_local_nodes(tmp_path):
    """The README's cluster steps as written, with the Ray that `advtransfer[ray]` installs: a
    token, a head node and a second node (both on this machine, their own home and temp dir),
    then `advtransfer rank --executor ray --address`, whose scores are the local run's. A
    driver without the token setting is refused at once, saying what to set."""
    import csv
    import shutil
    import subprocess
    import tempfile

    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's sockets: paths <= 107 bytes
    bindir = Path(sys.executable).parent
    ray_cli, cli = str(bindir / "ray"), str(bindir / "advtransfer")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "OMP_NUM_THREADS": "1"}
    port = _free_port()
    address = f"127.0.0.1:{port}"

    def sh(*args, check=True, environ=env):
        return subprocess.run(args, env=environ, capture_output=True, text=True, timeout=300,
                              check=check, cwd=tmp_path)

    try:
        sh(ray_cli, "get-auth-token", "--generate")
        sh(ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "1",
           "--disable-usage-stats", "--include-dashboard=false",
           f"--temp-dir={temp}")
        sh(ray_cli, "start", "--address", address, "--num-cpus", "1", "--disable-usage-stats")
        args = ["rank", "--reference", "digits-cnn", "-c", "digits-mlp", "-c", "digits-linear",
                "--methods", "alpha1,logme", "--attack-samples", "32", "--steps", "2",
                "--quiet", "--threads", "1"]
        on_ray = sh(cli, *args, "--executor", "ray", "--address", address,
                    "--out", str(tmp_path / "ray.csv"))
        assert on_ray.returncode == 0, on_ray.stderr[-2000:]
        sh(cli, *args, "--out", str(tmp_path / "local.csv"))

        def scores(name):
            with open(tmp_path / name) as f:
                return {(r["candidate"], m): float(r[m]) for r in csv.DictReader(f)
                        for m in ("alpha1", "logme")}

        assert scores("ray.csv") == pytest.approx(scores("local.csv"), rel=1e-5)
        refused = sh(cli, *args, "--executor", "ray", "--address", address, check=False,
                     environ={k: v for k, v in env.items() if k != "RAY_AUTH_MODE"})
        text = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "cannot reach the Ray cluster" in text
        assert "RAY_AUTH_MODE=token" in text and "Traceback" not in refused.stderr
    finally:
        sh(ray_cli, "stop", "--force", check=False)
        shutil.rmtree(temp, ignore_errors=True)
