"""Recipes on a 2-worker local Ray: same numbers, bytes per task, work done in the workers,
a killed worker, a failing unit.

On a local Ray of 2 CPUs (``ray.init(num_cpus=2)`` in this process, workers with 1 torch
thread, this process too, so training reduces in the same order on both sides), for each of
``digits-model-selection`` and ``digits-distribution`` with ``quick=True``
(:func:`advtransfer.experiments.runner.run` into fresh directories, once with the local
executor and once with the Ray executor):

(a) numbers: the ``records`` and ``correlations`` of the two ``results.json`` compared value
    by value; the largest absolute difference of their numbers (0 when identical) and whether
    they are identical (same keys, same strings, equal numbers, NaN equal to NaN).
(b) bytes per task: what each Ray task references: the objects put into the store for its map
    (the unit function and each shared value, put once per map and referenced by every task
    of it) plus its own item, each measured as its pickled size (protocol 5, out-of-band
    buffers included: the bytes Ray stores). Reported per recipe: tasks, puts, the mean bytes
    referenced per task and the largest put.
(c) work in the workers: the fraction of the Ray run's unit compute done in its workers,
    ``in_workers / (in_workers + in_process)`` from ``results.json``'s ``unit_seconds``:
    ``in_workers`` sums the seconds units took inside their Ray tasks
    (:class:`~advtransfer.executors.RayExecutor` ``worker_seconds``), ``in_process`` the
    seconds the driver spent computing units itself (:attr:`Store.compute_seconds`,
    outermost computations only). Goal: >= 0.9 (nothing is asserted: it measures how much
    of a recipe is cut into units that go through the executor).
(d) a killed worker: one of 4 digits units kills its own worker with SIGKILL on its first try
    (``RayExecutor(max_retries=2)``); whether it was retried (another process) and whether the
    results equal the local executor's.
(e) a failing unit: ``advtransfer rank --executor ray`` (in process, on this Ray) with a
    candidate whose weights file cannot be read: the exit code (goal 1), the ``error:`` line
    (goal: exactly one line, no traceback), and whether every CPU of the Ray is free again
    within 20 s (no task left running; Ray's task listing needs the dashboard, which is off).

``--quick`` (a smoke test): ``digits-model-selection`` only, one target and three methods.
Prints a table, or with ``--json`` the JSON. Usage::

    python benchmarks/bench_ray.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

RAY_WORKERS = 2
RECIPES: dict[str, list[str]] = {"digits-model-selection": [], "digits-distribution": []}
QUICK_RECIPES: dict[str, list[str]] = {
    "digits-model-selection": ['targets=["ge5"]', 'methods=["alpha1", "alpha2_s2t", "logme"]']}


def pickled_bytes(value: Any) -> int:
    """The bytes Ray stores for ``value``: its pickle (protocol 5, cloudpickle as Ray) plus the
    out-of-band buffers (NumPy arrays) that pickle hands over separately."""
    import ray

    buffers: list[pickle.PickleBuffer] = []
    head = ray.cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def measuring_ray() -> Any:
    """A :class:`~advtransfer.executors.RayExecutor` that records, per ``map``, its tasks, the
    size of every object it puts and of every item."""
    from advtransfer.executors import RayExecutor

    class MeasuringRay(RayExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.maps: list[dict[str, Any]] = []

        def _put(self, ray: Any, value: Any) -> Any:
            self.maps[-1]["puts"].append(pickled_bytes(value))
            return ray.put(value)

        def map(self, fn: Callable[..., Any], items: Sequence[Any], **kwargs: Any) -> list[Any]:
            from advtransfer.executors import _to_store

            items = list(items)
            self.maps.append({"tasks": len(items), "puts": [],
                              "items": [pickled_bytes(_to_store(i)) for i in items]})
            return super().map(fn, items, **kwargs)

    return MeasuringRay()


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """``{"/a/0/b": leaf, ...}``: every leaf of nested dicts and lists, keyed by its path."""
    if isinstance(value, dict):
        pairs = [(f"{path}/{key}", sub) for key, sub in value.items()]
    elif isinstance(value, list):
        pairs = [(f"{path}/{i}", sub) for i, sub in enumerate(value)]
    else:
        return {path: value}
    return {k: v for where, sub in pairs for k, v in _flatten(sub, where).items()}


def compare(a: Any, b: Any) -> tuple[bool, float]:
    """Whether two JSON values are identical (same keys and strings, equal numbers, NaN equal
    to NaN) and the largest absolute difference between their numbers."""
    fa, fb = _flatten(a), _flatten(b)
    if fa.keys() != fb.keys():
        return False, math.inf
    same, worst = True, 0.0
    for key, x in fa.items():
        y = fb[key]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if math.isnan(x) and math.isnan(y):
                continue
            worst = max(worst, abs(x - y))
            same = same and x == y
        else:
            same = same and x == y
    return same, worst


def bench_recipe(name: str, overrides: list[str], root: Path) -> dict[str, Any]:
    """(a)-(c) for one recipe: a local run and a Ray run into fresh directories."""
    from advtransfer.experiments.runner import run

    ray_ex = measuring_ray()
    local = run(name, root / f"{name}-local", quick=True, progress=False, overrides=overrides)
    on_ray = run(name, root / f"{name}-ray", quick=True, progress=False, overrides=overrides,
                 executor=ray_ex)
    same, worst = compare({k: local.get(k) for k in ("records", "correlations")},
                          {k: on_ray.get(k) for k in ("records", "correlations")})
    tasks = sum(m["tasks"] for m in ray_ex.maps)
    referenced = sum(m["tasks"] * sum(m["puts"]) + sum(m["items"]) for m in ray_ex.maps)
    return {"recipe": name, "identical": same, "max_abs_diff": worst, "tasks": tasks,
            "maps": len(ray_ex.maps), "puts": sum(len(m["puts"]) for m in ray_ex.maps),
            "bytes_per_task": referenced / tasks if tasks else 0.0,
            "largest_put_bytes": max((p for m in ray_ex.maps for p in m["puts"]), default=0),
            "ray_wall_s": on_ray["wall_time_s"], "local_wall_s": local["wall_time_s"],
            **_fraction(on_ray["unit_seconds"])}


def _fraction(seconds: dict[str, float]) -> dict[str, float]:
    """(c) from a run's ``unit_seconds``."""
    inside, outside = seconds["in_workers"], seconds["in_process"]
    total = inside + outside
    return {"worker_s": inside, "driver_s": outside,
            "worker_fraction": inside / total if total else math.nan}


def _unit(seed: int, *, marker: str) -> float:
    """A digits MLP built from ``seed`` and its output summed; the unit of seed 2 kills its
    own process (SIGKILL) the first time (no ``marker`` file yet)."""
    from advtransfer.models.architectures import digits_mlp

    if seed == 2 and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    torch.manual_seed(seed)
    model = digits_mlp(10, hidden=24).eval()
    with torch.no_grad():
        return model(torch.linspace(0, 1, 64).reshape(1, 64)).sum().item()


def bench_killed(root: Path) -> dict[str, Any]:
    """(d): 4 units, one of whose workers is killed once."""
    from advtransfer.executors import LocalExecutor, RayExecutor

    marker = root / "killed-once"
    start = time.perf_counter()
    on_ray = RayExecutor(max_retries=2).map(_unit, range(4), shared={"marker": str(marker)})
    seconds = time.perf_counter() - start
    local = LocalExecutor().map(_unit, range(4), shared={"marker": str(marker)})
    killed = marker.exists() and int(marker.read_text()) != os.getpid()
    return {"killed_once": killed, "identical": on_ray == local, "seconds": seconds}


def _all_cpus_free(ray: Any, timeout: float = 20.0) -> tuple[bool, float]:
    total, start = ray.cluster_resources()["CPU"], time.monotonic()
    while time.monotonic() - start < timeout:
        if ray.available_resources().get("CPU", 0) == total:
            return True, time.monotonic() - start
        time.sleep(0.1)
    return False, timeout


def bench_failure(root: Path) -> dict[str, Any]:
    """(e): ``advtransfer rank --executor ray`` with an unreadable candidate."""
    import ray
    from typer.testing import CliRunner

    from advtransfer.cli import app

    bad = root / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    start = time.perf_counter()
    result = CliRunner().invoke(app, [
        "rank", "--reference", "digits-mlp", "-c", "digits-linear", "-c", f"digits-mlp={bad}",
        "-c", "digits-cnn", "--methods", "logme", "--quiet", "--threads", "1",
        "--executor", "ray"])
    seconds = time.perf_counter() - start
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    free, after = _all_cpus_free(ray)
    return {"exit_code": result.exit_code, "error_lines": len(errors),
            "error": errors[0] if errors else "", "traceback": "Traceback" in result.stderr,
            "cpus_free": free, "cpus_free_after_s": after, "seconds": seconds}


def run_all(quick: bool) -> dict[str, Any]:
    import ray
    from threadpoolctl import threadpool_limits

    import advtransfer

    src = str(Path(advtransfer.__file__).resolve().parents[1])  # the workers import these
    torch.set_num_threads(1)
    # BLAS with 1 thread here too, as in the workers (OMP_NUM_THREADS=1): PARC's randomized
    # PCA differs by a few percent between BLAS thread counts, the rest to the last bit
    threadpool_limits(1)
    ray.init(num_cpus=RAY_WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": src}})
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            root = Path(tmp)
            recipes = [bench_recipe(name, overrides, root)
                       for name, overrides in (QUICK_RECIPES if quick else RECIPES).items()]
            return {"workers": RAY_WORKERS, "quick": quick, "recipes": recipes,
                    "killed_worker": bench_killed(root), "failing_unit": bench_failure(root),
                    "load_average": list(os.getloadavg())}
    finally:
        ray.shutdown()


def _print(result: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, 180))  # the table's width, also in a pipe
    table = Table(title=f"recipes (quick) on a local Ray of {result['workers']} workers vs "
                        "in process")
    for col in ("recipe", "identical", "max |diff|", "tasks", "puts", "kB / task",
                "largest put kB", "Ray wall s", "worker unit s", "driver unit s",
                "in workers"):
        table.add_column(col, justify="right")
    for r in result["recipes"]:
        table.add_row(r["recipe"], "yes" if r["identical"] else "[red]no[/]",
                      f"{r['max_abs_diff']:.3g}", str(r["tasks"]), str(r["puts"]),
                      f"{r['bytes_per_task'] / 1e3:.1f}", f"{r['largest_put_bytes'] / 1e3:.1f}",
                      f"{r['ray_wall_s']:.1f}", f"{r['worker_s']:.1f}", f"{r['driver_s']:.1f}",
                      f"{r['worker_fraction']:.3f}")
    console.print(table)
    k, f = result["killed_worker"], result["failing_unit"]
    console.print(f"killed worker: killed once {k['killed_once']}, retried with the local "
                  f"numbers {k['identical']} ({k['seconds']:.1f} s)")
    console.print(f"failing unit: exit {f['exit_code']}, {f['error_lines']} error line(s), "
                  f"traceback {f['traceback']}, every CPU free again {f['cpus_free']} "
                  f"(after {f['cpus_free_after_s']:.1f} s)", soft_wrap=True)
    console.print(f"  {f['error']}", markup=False, highlight=False, soft_wrap=True)
    console.print("load average (1, 5, 15 min): "
                  + ", ".join(f"{v:.2f}" for v in result["load_average"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: digits-model-selection only, 1 target, 3 methods")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        result: dict[str, Any] = {"skipped": "ray is not importable (pip install "
                                             "'advtransfer[ray]')"}
    else:
        stdout, sys.stdout = sys.stdout, sys.stderr  # chatter of Ray and the runs: not stdout
        try:
            result = run_all(args.quick)
        finally:
            sys.stdout = stdout
    if args.json:
        print(json.dumps(result, indent=2))
    elif "skipped" in result:
        print(f"skipped: {result['skipped']}")
    else:
        _print(result)


if __name__ == "__main__":
    main()
