"""End-to-end runs of the embedded recipes at reduced size, resume after SIGKILL, reports."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from advtransfer.cli import app
from advtransfer.experiments import run

SMALL_DIGITS = ["repeats=1", "epochs=4", "finetune_epochs=5", "steps=3",
                "shares=[0.0, 0.5, 1.0]"]


def _numbers(results: dict) -> list:
    keys = ("transfer_accuracy", "alpha1_t2s", "alpha2_s2t", "combined_t2s")
    return [[r[k] for k in keys] for r in results["records"]]


def test_digits_distribution_end_to_end_and_rerun_reuses_everything(tmp_path):
    out = tmp_path / "run"
    results = run("digits-distribution", out, overrides=SMALL_DIGITS, progress=False)
    assert len(results["records"]) == 3
    for r in results["records"]:
        assert 0 <= r["transfer_accuracy"] <= 1 and r["alpha1_t2s"] > 0
        assert np.isfinite([r["alpha2_s2t"], r["combined_t2s"], r["transfer_loss"]]).all()
    for name in ("results.json", "results.csv", "report.md", "report.html"):
        assert (out / name).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["versions"]["torch"] and saved["config"]["epochs"] == 4
    assert saved["correlations"] and saved["units"]["computed"] > 0
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert list((out / "figures").glob("*.png"))
    again = run("digits-distribution", out, overrides=SMALL_DIGITS, progress=False)
    assert again["units"]["computed"] == 0 and again["units"]["reused"] > 0
    assert _numbers(again) == _numbers(results)


def test_synthetic_end_to_end_quick_and_paper_data(tmp_path):
    results = run("synthetic", tmp_path / "g", quick=True, progress=False)
    scales = [r["scale"] for r in results["records"]]
    assert scales == [0.0, 0.3, 0.6, 0.9]
    first = results["records"][0]
    assert first["alpha1_s2t"] == pytest.approx(1.0) and first["gradient_matching_distance"] < 1e-8
    paper = run("synthetic", tmp_path / "p", quick=True, overrides=['data="paper"', "hidden=100"],
                progress=False)
    a1 = [r["alpha1_s2t"] for r in paper["records"]]
    assert a1[0] == pytest.approx(1.0) and all(0 < v <= 1 + 1e-9 for v in a1)
    assert paper["target"]["test_r2"] > 0.9  # the authors' trained target fits their data


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    reference = run("digits-distribution", tmp_path / "ref", overrides=SMALL_DIGITS,
                    progress=False)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "advtransfer.cli", "run", "digits-distribution", "--out",
            str(out), "--quiet", *[a for s in SMALL_DIGITS for a in ("--set", s)]]
    # same thread count as this process: float reductions (and so the numbers) depend on it
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "records").glob("*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()  # killed before the end
    assert not list(out.rglob("*.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    resumed = run("digits-distribution", out, overrides=SMALL_DIGITS, progress=False)
    assert resumed["units"]["reused"] > 0
    assert _numbers(resumed) == _numbers(reference)


def test_cli_run_list_report_and_bad_input(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "digits-distribution" in listed.output
    assert "synthetic" in listed.output
    out = tmp_path / "cli"
    args = ["run", "synthetic", "--out", str(out), "--quick", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    (out / "report.md").unlink()
    rep = runner.invoke(app, ["report", str(out)])
    assert rep.exit_code == 0 and (out / "report.md").is_file()
    bad = runner.invoke(app, ["run", "synthetic", "--out", str(out), "--quick", "--quiet",
                              "--set", "hidden=7"])
    assert bad.exit_code == 2 and "different configuration" in bad.output
    bad = runner.invoke(app, ["run", "synthetic", "--out", str(tmp_path / "x"), "--set",
                              "nope=1"])
    assert bad.exit_code == 2 and "unknown configuration key" in bad.output
    # a long path must not be wrapped into the message: the whole sentence stays on one line
    empty = tmp_path / ("a-rather-long-directory-name-" * 4) / "empty"
    bad = runner.invoke(app, ["report", str(empty)])
    assert bad.exit_code == 1 and f"{empty} has no results.json" in bad.output


@pytest.mark.slow
def test_demo_full_size_and_fast_rerun(tmp_path):
    out = tmp_path / "demo"
    start = time.perf_counter()
    first = run("digits-distribution", out, progress=False)
    t_first = time.perf_counter() - start
    assert len(first["records"]) >= 5
    start = time.perf_counter()
    run("digits-distribution", out, progress=False)
    assert time.perf_counter() - start < 0.1 * t_first + 5.0
    assert Path(out / "report.html").stat().st_size > 1000
