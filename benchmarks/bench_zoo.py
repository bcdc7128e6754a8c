"""Model zoos at scale: peak memory and time per candidate of ``rank``, and Ray vs in-process.

:func:`advtransfer.selection.rank` attacks the reference once, then scores each candidate as an
independent unit; candidates given as builder functions are built inside their unit and released
after it. This benchmark checks the two claims that follow, on zoos of ``--sizes`` candidates
(default 10, 50, 100), each size in a fresh subprocess (so ``ru_maxrss``, the peak resident set
of that process, is per size):

* memory: peak RSS at the largest zoo within 1.3x of the peak at the smallest;
* time: seconds per candidate (the candidates' units only: the wall time of the executor's
  ``map``, without the one-off decode, reference accuracy and reference attack) flat across
  sizes, max / min within 1.2x.

Each child first ranks one candidate outside the zoo (a warm-up: first calls, allocator; its
time is in the JSON), then the zoo. The sizes run ``--repeats`` times (default 3), interleaved
(10, 50, 100, 10, ...) so that a change of load on a shared machine hits every size; per size,
the fastest repeat's time (the least disturbed) and the largest peak RSS of all repeats are
reported, with every repeat's seconds per candidate in the JSON.

The zoo: :class:`ZooNet`, a small CNN on random 3 x 32 x 32 inputs (conv3x3/2 16 - ReLU -
conv3x3/2 32 - ReLU - Linear(2048, 384) - ReLU - Linear(384, 10)), 795,754 parameters (3.2 MB of
float32 weights), random weights, candidate ``i`` built by ``functools.partial(build, i)`` (seed
``i``). Holding 100 candidates at once would take 318 MB of weights alone, about +48% over the
~660 MB peak of a child that ranks 10 (importing torch alone peaks at ~530 MB); the ``held``
control row measures exactly that (the largest zoo passed as built models: 1.46x the peak of 10
on this machine), so the memory check is sensitive. The reference is one more ZooNet with random
weights (seed 10^6); the target data are ``--target-samples`` random inputs with random labels
over 10 classes (the scores are meaningless as a ranking; the cost is that of real data, up to
the attack's early stop, which depends on the weights). Methods: alpha1, alpha2, combined,
logme, leep; attack: PGD on the deviation objective (rank's default) with ``--steps`` (default
10) on ``--attack-samples`` (default 128) inputs, eps 1.0 (L2).

Ray: the zoo of ``--ray-size`` candidates (default 50) ranked in process with 1 thread and with
``executor="ray"`` on a local Ray of 2 CPUs (``ray.init(num_cpus=2)``, workers with 1 torch
thread each), in one child; after a warm-up rank on each side (2 candidates in process, 4 on
Ray: worker start, imports, first task), so the ratios are steady state, then ``--repeats``
alternations (in process, Ray, in process, ...), the fastest of each side reported. The Ray
startup (``ray.init`` and the warm-up) is reported separately. Two workers can at best halve
the units' time, and only when both cores are free: check the load average printed. Ratios:
in-process / Ray wall time of the candidates' units and of the whole ``rank`` call (the
reference attack runs in the driver in both), and the largest absolute difference between the
scores of the two executors. Skipped (with a message) when Ray is not importable.

Columns of the zoo table: peak RSS of the child (MB) at the end and before the zoo's ``rank``
(after imports, data, reference, warm-up and, for ``held``, the models), its ratio to the
smallest zoo's peak, the reference part of ``rank`` (decode, reference accuracy and attack),
the candidates' units, seconds per candidate and its ratio to the fastest size. All ratios come
from one run of this script; the machine's load average is printed with them. ``--quick`` (a
smoke test) uses sizes 4, 8, a Ray zoo of 8, 1 repeat and 32 attacked of 128 target inputs.
Usage::

    python benchmarks/bench_zoo.py [--sizes 10,50,100] [--ray-size 50] [--repeats 3]
        [--threads 1] [--steps 10] [--attack-samples 128] [--target-samples 512] [--no-control]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

METHODS = ["alpha1", "alpha2", "combined", "logme", "leep"]
RAY_WORKERS = 2
MEMORY_GOAL = 1.3
TIME_GOAL = 1.2


class ZooNet(nn.Module):
    """The zoo's candidate: two strided 3x3 convolutions, then a wide hidden layer (most of the
    weights, few of the FLOPs) and the 10-class head."""

    def __init__(self, hidden: int = 384, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(32 * 8 * 8, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.classifier(self.flatten(self.features(x))))


def build(seed: int) -> nn.Module:
    """Candidate (or reference) number ``seed``: a ZooNet with weights drawn from that seed."""
    torch.manual_seed(seed)
    return ZooNet().eval()


class TimedExecutor:
    """An executor that runs another one and records the wall time of its ``map`` (the
    candidates' units of a :func:`rank` call)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    def map(self, fn: Callable[..., Any], items: Sequence[Any], **kwargs: Any) -> list[Any]:
        start = time.perf_counter()
        out = self.inner.map(fn, items, **kwargs)
        self.seconds = time.perf_counter() - start
        return out


def _task(target_samples: int) -> tuple[tuple[torch.Tensor, torch.Tensor], nn.Module]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(target_samples, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (target_samples,), generator=gen)
    return (x, y), build(10**6)


def _pool(n: int, first: int = 0) -> dict[str, Callable[[], nn.Module]]:
    return {f"c{i}": functools.partial(build, i) for i in range(first, first + n)}


def _rank(pool: dict[str, Any], task: Any, executor: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """One timed :func:`rank` call: total seconds, seconds of the candidates' units, scores."""
    from advtransfer.selection import rank

    data, reference = task
    timed = TimedExecutor(executor)
    start = time.perf_counter()
    result = rank(pool, data, reference, methods=METHODS, eps=1.0, steps=cfg["steps"],
                  attack_samples=cfg["attack_samples"], seed=0, executor=timed)
    total = time.perf_counter() - start
    return {"total_s": total, "units_s": timed.seconds, "reference_s": total - timed.seconds,
            "scores": result.scores}


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def child_zoo(n: int, cfg: dict[str, Any], *, held: bool) -> dict[str, Any]:
    """Rank a zoo of ``n`` builders (or, ``held``, of ``n`` models built up front) in process,
    after a warm-up rank of one candidate outside the zoo (first calls, allocator)."""
    from advtransfer.executors import LocalExecutor

    task = _task(cfg["target_samples"])
    warm = _rank(_pool(1, first=n), task, LocalExecutor(), cfg)
    pool: dict[str, Any] = _pool(n)
    if held:
        pool = {name: make() for name, make in pool.items()}
    before = _peak_rss_kb()
    run = _rank(pool, task, LocalExecutor(), cfg)
    return {"candidates": n, "held": held, "warmup_rank_s": warm["total_s"],
            "peak_rss_kb_before_rank": before, "peak_rss_kb": _peak_rss_kb(),
            "total_s": run["total_s"], "units_s": run["units_s"],
            "reference_s": run["reference_s"], "s_per_candidate": run["units_s"] / n}


def child_ray(n: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """The zoo of ``n`` in process (1 thread) and on a local Ray of 2 one-thread workers,
    alternately ``cfg["repeats"]`` times after a warm-up of each."""
    try:
        import ray
    except ImportError:
        return {"skipped": "ray is not importable (pip install 'advtransfer[ray]')"}
    import advtransfer
    from advtransfer.executors import LocalExecutor, RayExecutor

    task = _task(cfg["target_samples"])
    _rank(_pool(2, first=n), task, LocalExecutor(), cfg)  # warm-up
    src = str(Path(advtransfer.__file__).resolve().parents[1])  # the workers import these sources
    start = time.perf_counter()
    ray.init(num_cpus=RAY_WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": src}})
    init_s = time.perf_counter() - start
    warm = _rank(_pool(2 * RAY_WORKERS, first=n), task, RayExecutor(), cfg)
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for _ in range(cfg["repeats"]):
        runs["local"].append(_rank(_pool(n), task, LocalExecutor(), cfg))
        runs["ray"].append(_rank(_pool(n), task, RayExecutor(), cfg))
    ray.shutdown()
    first = runs["local"][0]["scores"]
    diff = max(abs(r["scores"][m][c] - first[m][c]) for r in runs["ray"]
               for m in METHODS for c in first[m])
    best = {k: min(v, key=lambda r: r["units_s"]) for k, v in runs.items()}
    return {"candidates": n, "workers": RAY_WORKERS, "repeats": cfg["repeats"],
            "threads_in_process": torch.get_num_threads(),
            "ray_init_s": init_s, "ray_warmup_rank_s": warm["total_s"],
            **{k: {f: v for f, v in best[k].items() if f != "scores"} for k in best},
            "units_s_all": {k: [r["units_s"] for r in v] for k, v in runs.items()},
            "ratio_units": best["local"]["units_s"] / best["ray"]["units_s"],
            "ratio_total": best["local"]["total_s"] / best["ray"]["total_s"],
            "max_abs_score_diff": diff}


def _spawn(args: argparse.Namespace, child: str) -> dict[str, Any]:
    """Run this script in a fresh interpreter as ``--child CHILD``; its last stdout line is
    the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child,
           "--threads", str(args.threads), "--steps", str(args.steps),
           "--attack-samples", str(args.attack_samples),
           "--target-samples", str(args.target_samples), "--repeats", str(args.repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {child} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of a size's repeats (the least disturbed by other work on the machine),
    with the largest peak RSS of all of them and every repeat's seconds per candidate."""
    best = dict(min(runs, key=lambda r: r["s_per_candidate"]))
    best["peak_rss_kb"] = max(r["peak_rss_kb"] for r in runs)
    best["peak_rss_kb_before_rank"] = max(r["peak_rss_kb_before_rank"] for r in runs)
    best["s_per_candidate_all"] = [r["s_per_candidate"] for r in runs]
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits every size
        for n in sizes:
            runs[n].append(_spawn(args, f"zoo:{n}"))
    zoo = [_best(runs[n]) for n in sizes]
    control = _spawn(args, f"held:{sizes[-1]}") if args.control else None
    ray_run = _spawn(args, f"ray:{args.ray_size}") if args.ray_size else None
    params = sum(p.numel() for p in ZooNet().parameters())
    per = [z["s_per_candidate"] for z in zoo]
    memory_ratio = zoo[-1]["peak_rss_kb"] / zoo[0]["peak_rss_kb"]
    time_ratio = max(per) / min(per)
    out: dict[str, Any] = {
        "settings": {"sizes": sizes, "ray_size": args.ray_size, "threads": args.threads,
                     "repeats": args.repeats, "methods": METHODS, "steps": args.steps,
                     "eps": 1.0, "attack_samples": args.attack_samples,
                     "target_samples": args.target_samples, "parameters": params,
                     "weights_mb": params * 4 / 1e6,
                     "weights_mb_if_held": params * 4 * sizes[-1] / 1e6,
                     "load_average": list(os.getloadavg())},
        "zoo": zoo, "held_control": control, "ray": ray_run,
        "peak_ratio": memory_ratio, "time_ratio": time_ratio,
        "goal_peak_ratio_met": memory_ratio <= MEMORY_GOAL,
        "goal_time_ratio_met": time_ratio <= TIME_GOAL,
    }
    if control is not None:
        out["held_peak_ratio"] = control["peak_rss_kb"] / zoo[0]["peak_rss_kb"]
    return out


def _print(result: dict[str, Any]) -> None:
    s = result["settings"]
    console = Console()
    table = Table(title=f"rank on a zoo of ZooNets ({s['parameters']:,} parameters, "
                        f"{s['weights_mb']:.1f} MB each; {s['target_samples']} target inputs, "
                        f"attack {s['steps']} steps on {s['attack_samples']}; "
                        f"{s['threads']} thread(s); each size in a fresh process)")
    for col in ("zoo", "peak MB", "pre-zoo MB", "x peak", "ref. s", "units s", "s/cand.",
                "x min"):
        table.add_column(col, justify="right")
    zoo = result["zoo"]
    base_rss = zoo[0]["peak_rss_kb"]
    fastest = min(z["s_per_candidate"] for z in zoo)
    rows = [*zoo] + ([result["held_control"]] if result["held_control"] else [])
    for z in rows:
        name = f"{z['candidates']}" + (" held" if z["held"] else "")
        table.add_row(name, f"{z['peak_rss_kb'] / 1024:.0f}",
                      f"{z['peak_rss_kb_before_rank'] / 1024:.0f}",
                      f"{z['peak_rss_kb'] / base_rss:.2f}", f"{z['reference_s']:.2f}",
                      f"{z['units_s']:.2f}", f"{z['s_per_candidate']:.3f}",
                      f"{z['s_per_candidate'] / fastest:.2f}")
    console.print(table)
    console.print("s / candidate of every repeat: " + "; ".join(
        f"{z['candidates']}: " + " ".join(f"{v:.3f}" for v in z["s_per_candidate_all"])
        for z in zoo))
    console.print(f"{s['sizes'][-1]} candidates held at once: "
                  f"{s['weights_mb_if_held']:.0f} MB of weights ('held' row: built up front)")
    for key, goal, label in (("peak_ratio", MEMORY_GOAL, "peak RSS largest / smallest"),
                             ("time_ratio", TIME_GOAL, "s / candidate max / min")):
        ok = result[f"goal_{key}_met"]
        console.print(f"{label}: {result[key]:.2f} (goal <= {goal}): "
                      + ("[green]met[/]" if ok else "[red]not met[/]"))
    r = result["ray"]
    if r is None:
        pass
    elif "skipped" in r:
        console.print(f"Ray: skipped: {r['skipped']}")
    else:
        ray_table = Table(title=f"{r['candidates']} candidates: in process "
                                f"({r['threads_in_process']} thread(s)) vs Ray "
                                f"({r['workers']} local workers, 1 thread each), after warm-up; "
                                f"fastest of {r['repeats']}")
        for col in ("executor", "ref. s", "units s", "rank s"):
            ray_table.add_column(col, justify="right")
        for key in ("local", "ray"):
            row = r[key]
            ray_table.add_row(key, f"{row['reference_s']:.2f}", f"{row['units_s']:.2f}",
                              f"{row['total_s']:.2f}")
        ray_table.add_row("in process / Ray", "", f"{r['ratio_units']:.2f}x",
                          f"{r['ratio_total']:.2f}x")
        console.print(ray_table)
        console.print(f"Ray startup: ray.init {r['ray_init_s']:.2f} s, warm-up rank "
                      f"({2 * r['workers']} candidates) {r['ray_warmup_rank_s']:.2f} s; "
                      f"max |score(Ray) - score(in process)| = {r['max_abs_score_diff']:.3g}")
    console.print("load average (1, 5, 15 min): "
                  + ", ".join(f"{v:.2f}" for v in s["load_average"]))


def _sizes(text: str) -> list[int]:
    sizes = [int(v) for v in text.split(",") if v.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers; got {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[10, 50, 100],
                        help="zoo sizes, comma-separated")
    parser.add_argument("--ray-size", type=int, default=50,
                        help="zoo size of the Ray comparison (0: skip it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per size (the fastest is reported) and Ray / "
                             "in-process alternations")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attack-samples", type=int, default=128)
    parser.add_argument("--target-samples", type=int, default=512)
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the 'held' control (the largest zoo built up front)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: sizes 4,8, ray-size 8, 1 repeat, 32 attacked of 128 "
                             "inputs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        kind, _, n = args.child.partition(":")
        cfg = {"steps": args.steps, "attack_samples": args.attack_samples,
               "target_samples": args.target_samples, "repeats": args.repeats}
        out = (child_ray(int(n), cfg) if kind == "ray"
               else child_zoo(int(n), cfg, held=kind == "held"))
        print(json.dumps(out))
        return
    if args.quick:
        args.sizes, args.ray_size, args.repeats = [4, 8], 8, 1
        args.attack_samples, args.target_samples = 32, 128
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)


if __name__ == "__main__":
    main()
