"""Smoke tests of the benchmarks (``--quick``): they run, and their figures are consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import advtransfer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> dict:
    src = str(Path(advtransfer.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_bench_zoo_quick():
    """bench_zoo --quick (about 20 s: four fresh interpreters and a local Ray): per-size
    figures, ratios recomputed from them, the 'held' control sees the models' weights, and Ray
    gives the in-process scores."""
    out = _run("bench_zoo.py", "--quick", "--json")
    zoo = out["zoo"]
    assert [z["candidates"] for z in zoo] == [4, 8] and not any(z["held"] for z in zoo)
    for z in zoo:
        assert z["peak_rss_kb"] >= z["peak_rss_kb_before_rank"] > 0
        assert z["units_s"] + z["reference_s"] == pytest.approx(z["total_s"], rel=1e-9)
        assert z["s_per_candidate"] == pytest.approx(z["units_s"] / z["candidates"])
    per = [z["s_per_candidate"] for z in zoo]
    assert out["time_ratio"] == pytest.approx(max(per) / min(per))
    assert out["peak_ratio"] == pytest.approx(zoo[1]["peak_rss_kb"] / zoo[0]["peak_rss_kb"])
    # 8 models built up front raise the resident set by (about) their weights: 8 x 3.2 MB
    held = out["held_control"]
    weights_kb = 8 * out["settings"]["parameters"] * 4 / 1024
    assert held["held"] and held["candidates"] == 8
    assert held["peak_rss_kb_before_rank"] - zoo[1]["peak_rss_kb_before_rank"] >= 0.5 * weights_kb
    ray = out["ray"]
    if "skipped" in ray:
        pytest.skip(ray["skipped"])
    assert ray["candidates"] == 8 and ray["max_abs_score_diff"] <= 1e-6
    assert ray["ratio_units"] == pytest.approx(ray["local"]["units_s"] / ray["ray"]["units_s"])


@pytest.mark.slow
def test_bench_busy_quick():
    """bench_busy --quick (about 50 s: four short recipe runs, two beside a spinning process):
    both policies timed alone and beside the busy process, ratios recomputed from the times,
    explicit thread counts as asked and auto's within the cores."""
    out = _run("bench_busy.py", "--quick", "--json")
    assert out["busy_processes"] == 1 and set(out["policies"]) == {"2", "auto"}
    for policy, r in out["policies"].items():
        assert r["alone_s"] > 0 and r["busy_s"] > 0
        assert r["busy_over_alone"] == pytest.approx(r["busy_s"] / r["alone_s"], abs=0.01)
        used = r["threads_alone"] + r["threads_busy"]
        assert used == [2, 2] if policy == "2" else all(1 <= n <= os.cpu_count() for n in used)


@pytest.mark.slow
def test_bench_selection_quick():
    """bench_selection --quick: every estimator rank offers is timed per candidate, and the
    ratios are the seconds divided by LogME's and by fine-tuning's."""
    from advtransfer.methods import BASE_FEATURE_METHODS, GRADIENT_METHODS, POOL_METHODS

    out = _run("bench_selection.py", "--quick", "--json", "--finetune-epochs", "3",
               "--threads", "1")
    summary = out["summary"]
    for m in (*BASE_FEATURE_METHODS, *POOL_METHODS, *GRADIENT_METHODS, "leep", "nce",
              "ped_logme", "finetune (full)"):
        assert summary[m]["seconds_median"] > 0, m
    per = out["per_candidate"]
    for name, costs in per.items():
        for m, seconds in costs.items():
            assert seconds > 0, (name, m)
    assert summary["logme"]["x_logme"] == pytest.approx(1.0)
    assert summary["finetune (full)"]["of_finetune_full"] == pytest.approx(1.0)


@pytest.mark.slow
def test_bench_ray_quick():
    """bench_ray --quick (about 40 s: a local Ray of 2 workers): the recipe's numbers are
    identical on Ray, the per-task bytes and the fraction are recomputed from their parts, a
    killed worker is retried with the same numbers, and a failing unit is exit 1 with one
    error line and leaves every CPU free."""
    out = _run("bench_ray.py", "--quick", "--json")
    if "skipped" in out:
        pytest.skip(out["skipped"])
    (r,) = out["recipes"]
    assert r["recipe"] == "digits-model-selection" and r["identical"] and r["max_abs_diff"] == 0
    assert r["tasks"] >= 1 and r["bytes_per_task"] >= r["largest_put_bytes"] > 0
    assert r["worker_fraction"] == pytest.approx(r["worker_s"] / (r["worker_s"]
                                                                  + r["driver_s"]))
    assert 0 < r["worker_fraction"] <= 1 and r["driver_s"] >= 0
    assert out["killed_worker"] == {**out["killed_worker"], "killed_once": True,
                                    "identical": True}
    f = out["failing_unit"]
    assert (f["exit_code"], f["error_lines"], f["traceback"], f["cpus_free"]) == (1, 1, False,
                                                                                  True)
    assert "failed on Ray: AdvTransferError" in f["error"]
