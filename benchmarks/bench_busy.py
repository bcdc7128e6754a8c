"""The embedded default (``advtransfer demo``) alone and beside a busy process, per thread policy.

A thread whose core another process holds stalls every parallel region of torch's other threads,
so on a busy machine a run at torch's default (one thread per core) can be many times slower
than alone. For each policy (``--threads 2``, torch's default on a 2-core machine, i.e. the
behaviour before ``--threads auto``; and ``--threads auto``, the default now) the demo runs
into a fresh directory, first alone, then beside ``--busy`` processes that each keep one core
busy (a pure-Python loop, started a second before the demo so that ``auto`` sees them). Reports
each wall time (median of ``--repeats``), the thread counts used, and per policy the ratio
beside-busy / alone (goal: auto within 2x). Run it on an otherwise idle machine: ``auto`` reads
the load at its start.

Run: ``python benchmarks/bench_busy.py [--repeats 1] [--busy 1] [--policies 2,auto]
[--command demo] [--json]``. ``--quick`` runs ``synthetic --quick`` instead of the demo (a
smoke test of the benchmark itself).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def _advtransfer() -> list[str]:
    exe = Path(sys.executable).with_name("advtransfer")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "advtransfer.cli"]


def run_once(command: list[str], threads: str, busy: int) -> tuple[float, int]:
    """Wall time of one run of ``advtransfer COMMAND --threads THREADS`` into a fresh
    directory, beside ``busy`` spinning processes, and the thread count it used (``auto``
    says on stderr when it takes fewer than the cores)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    out = Path(tempfile.mkdtemp(prefix="bench-busy-"))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    try:
        if spinners:
            time.sleep(1.0)
        start = time.perf_counter()
        proc = subprocess.run([*_advtransfer(), *command, "--out", str(out / "run"), "--quiet",
                               "--threads", threads], env=env, check=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        fewer = re.search(r"using (\d+) of \d+ CPU threads", proc.stderr)
        used = int(fewer.group(1)) if fewer else (int(threads) if threads.isdigit()
                                                  else os.cpu_count() or 1)
        return elapsed, used
    finally:
        for p in spinners:
            p.kill()
            p.wait()
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--busy", type=int, default=1, help="busy processes (one core each)")
    parser.add_argument("--policies", default="2,auto", help="--threads values to compare")
    parser.add_argument("--quick", action="store_true", help="synthetic --quick, not the demo")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    command = ["run", "synthetic", "--quick"] if args.quick else ["demo"]
    times: dict[str, dict[str, list[float]]] = {}
    threads_used: dict[str, dict[str, list[int]]] = {}
    for _ in range(args.repeats):  # interleaved, so load changes hit every policy
        for policy in args.policies.split(","):
            t = times.setdefault(policy, {"alone": [], "busy": []})
            for case, busy in (("alone", 0), ("busy", args.busy)):
                elapsed, used = run_once(command, policy, busy)
                t[case].append(elapsed)
                threads_used.setdefault(policy, {}).setdefault(case, []).append(used)
    result = {"command": " ".join(command), "busy_processes": args.busy,
              "cores": os.cpu_count(), "repeats": args.repeats, "policies": {}}
    for policy, t in times.items():
        alone, busy = statistics.median(t["alone"]), statistics.median(t["busy"])
        result["policies"][policy] = {"alone_s": round(alone, 2), "busy_s": round(busy, 2),
                                      "busy_over_alone": round(busy / alone, 2),
                                      "threads_alone": threads_used[policy]["alone"],
                                      "threads_busy": threads_used[policy]["busy"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['command']}: alone and beside {args.busy} busy process(es), "
              f"{result['cores']} cores")
        for policy, r in result["policies"].items():
            print(f"  --threads {policy:>5}: alone {r['alone_s']:7.1f} s "
                  f"({r['threads_alone']} threads)   beside busy {r['busy_s']:7.1f} s "
                  f"({r['threads_busy']} threads)   ratio {r['busy_over_alone']:.2f}")


if __name__ == "__main__":
    main()
