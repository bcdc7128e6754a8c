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

SMALL_DIGITS = ["repeats=1", "epochs=2", "finetune_epochs=3", "steps=2",
                "shares=[0.0, 0.5, 1.0]"]


def _numbers(results: dict) -> list:
    keys = ("transfer_accuracy", "alpha1_t2s", "alpha2_s2t", "combined_t2s")
    return [[r[k] for k in keys] for r in results["records"]]


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> tuple[dict, Path]:
    """One small digits-distribution run (results, directory), shared by the tests below."""
    out = tmp_path_factory.mktemp("digits") / "run"
    return run("digits-distribution", out, overrides=SMALL_DIGITS, progress=False), out


def test_digits_distribution_end_to_end_and_rerun_reuses_everything(small_digits):
    results, out = small_digits
    assert len(results["records"]) == 3
    for r in results["records"]:
        assert 0 <= r["transfer_accuracy"] <= 1 and r["alpha1_t2s"] > 0
        assert np.isfinite([r["alpha2_s2t"], r["combined_t2s"], r["transfer_loss"]]).all()
    for name in ("results.json", "results.csv", "report.md", "report.html"):
        assert (out / name).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["versions"]["torch"] and saved["config"]["epochs"] == 2
    assert saved["correlations"] and saved["units"]["computed"] > 0
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert list((out / "figures").glob("*.png"))
    # the share is the design variable: one seed per share leaves nothing within a share
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Within groups of equal share of target classes" in md
    assert "no within-group correlation could be computed" in md
    assert all(row["within"]["group"] == "share" and row["within"]["r"] is None
               for row in saved["correlations"])
    again = run("digits-distribution", out, overrides=SMALL_DIGITS, progress=False)
    assert again["units"]["computed"] == 0 and again["units"]["reused"] > 0
    assert _numbers(again) == _numbers(results)


def test_synthetic_end_to_end_quick_and_paper_data(tmp_path):
    results = run("synthetic", tmp_path / "g", quick=True, progress=False)
    scales = [r["scale"] for r in results["records"]]
    assert scales == [0.0, 0.3, 0.6, 0.9]
    first = results["records"][0]
    assert first["alpha1_s2t"] == pytest.approx(1.0) and first["gradient_matching_distance"] < 1e-8
    paper = run("synthetic", tmp_path / "p", quick=True, progress=False,
                overrides=['data="paper"', "hidden=100", "source_widths=[100, 50]"])
    columns = ["scale", "alpha_S_T", "alpha_T_S", "gamma_S_T", "gamma_T_S",
               "alpha_gamma_combined_S_T", "alpha_gamma_combined_T_S", "loss_f_S", "loss_f_T",
               "gradient_loss"]  # the authors' results files' columns, in their order
    with open(tmp_path / "p" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and all(c in rows[0] for c in columns)
    assert {r["authors_file"] for r in rows} == {
        f"result_scale-{s}rbf-n-50-d-10-m-100-N-400-attack_level-{k}.csv"
        for s in ("", "crossmodel-source_m-50-") for k in (0, 1)}
    same = paper["records"][0]  # the unperturbed target against itself, optimal attack
    assert (same["source_hidden"], same["attack_level"], same["scale"]) == (100, 0, 0.0)
    assert same["alpha_S_T"] == pytest.approx(1.0) and same["gradient_loss"] < 1e-8
    assert same["alpha_gamma_combined_S_T"] == pytest.approx(same["gamma_S_T"])
    # refitting the last layer by least squares cannot do worse than the trained one
    assert same["loss_f_S"] <= same["loss_f_T"] + 1e-12 and same["loss_f_T"] < 0.1


def test_killed_run_resumes_to_the_same_numbers(tmp_path, small_digits):
    reference, _ = small_digits  # an uninterrupted run in this process
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


def test_cli_run_list_report_and_bad_input(tmp_path, tiny):
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "digits-distribution" in listed.output
    assert "synthetic" in listed.output
    out = tmp_path / "cli"
    result = runner.invoke(app, [*tiny, "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    (out / "report.md").unlink()
    rep = runner.invoke(app, ["report", str(out)])
    assert rep.exit_code == 0 and (out / "report.md").is_file()
    bad = runner.invoke(app, [*tiny, "--out", str(out), "--quick", "--set", "n=7"])
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
    # a rerun is fast because it computes nothing: every unit is read back, and the report is
    # not rewritten (a property of the run, unlike a wall-clock figure on a loaded machine)
    out = tmp_path / "demo"
    first = run("digits-distribution", out, progress=False)
    assert len(first["records"]) >= 5 and first["units"]["computed"] > 0
    report = out / "report.html"
    written = report.stat().st_mtime_ns
    again = run("digits-distribution", out, progress=False)
    assert again["units"] == {"computed": 0, "reused": len(first["unit_files"])}
    assert again["records"] == first["records"]
    assert report.stat().st_size > 1000 and report.stat().st_mtime_ns == written


@pytest.mark.parametrize("recipe, value", [
    ("synthetic", "data=paperz"), ("synthetic", "test_fraction=1.5"),
    ("taskonomy", "pool=-1"), ("celeba-attributes", "n_attack=0"),
    ("cifar10-stl10-architectures", "finetune=x"), ("cifar10-stl10-proportions", "workers=-1"),
    ("digits-model-selection", "test_fraction=2"), ("digits-model-selection-shift", "steps=0"),
    ("imagenet-zoo", "fake_classes=1"), ("digits-distribution", "eps=-1"),
    ("digits-distribution", "architecture=\"resnet101\""),
    ("taskonomy", "norm=\"l3\""),
])
def test_every_recipe_checks_its_configuration_before_writing(tmp_path, recipe, value):
    # a bad value is a usage error (exit 2) found before anything is written, in every recipe
    from typer.testing import CliRunner

    from advtransfer.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", recipe, "--out", str(out), "--set", value,
                                      "--quiet"])
    assert result.exit_code == 2, result.output
    assert value.split("=")[0] in result.output and not out.exists()
