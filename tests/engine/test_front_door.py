"""What a new user meets: bad input leaves no trace, corrupt files are named, Ctrl-C, progress."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advtransfer import progress
from advtransfer.cli import app
from advtransfer.store import Store

runner = CliRunner()


def _records(results_path: Path) -> list:
    return json.loads(results_path.read_text())["records"]


def test_typo_in_set_writes_nothing_and_the_corrected_rerun_works(tmp_path, tiny):
    out = tmp_path / "run"
    bad = runner.invoke(app, [*tiny, "--out", str(out), "--set", "mode=squre"])
    assert bad.exit_code != 0 and "squre" in bad.output
    assert not out.exists()  # no run.json, models/ or records/: nothing blocks the rerun
    good = runner.invoke(app, [*tiny, "--out", str(out), "--set", 'mode="square"'])
    assert good.exit_code == 0, good.output
    assert (out / "run.json").is_file() and (out / "results.json").is_file()


def test_missing_data_writes_nothing_and_exits_1(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "cifar10-stl10-architectures", "--quick", "--quiet",
                                 "--out", str(out), "--data-root", str(tmp_path / "no-data")])
    assert result.exit_code == 1 and "missing" in result.output
    assert not out.exists() and not (tmp_path / "no-data").exists()


def test_out_refuses_a_foreign_folder_and_creates_no_parents_outside_cwd(tmp_path, tiny):
    folder = tmp_path / "my-photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"x")
    result = runner.invoke(app, [*tiny, "--out", str(folder)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]
    deep = tmp_path / "nonexistent" / "dir" / "x.json"
    result = runner.invoke(app, [*tiny, "--out", str(deep)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "nonexistent").exists()
    result = runner.invoke(app, ["measure", "--quiet", "--out", str(deep)])
    assert result.exit_code == 2 and not (tmp_path / "nonexistent").exists()


def test_relative_out_creates_missing_parents_inside_cwd(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*tiny, "--out", "runs/a"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "a" / "report.md").is_file()


@pytest.fixture
def finished(tmp_path, tiny) -> Path:
    out = tmp_path / "run"
    result = runner.invoke(app, [*tiny, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_record_and_model_are_named_and_recomputed(finished, tiny):
    before = _records(finished / "results.json")
    record = sorted((finished / "records").glob("*.json"))[0]
    model = sorted((finished / "models").glob("*.safetensors"))[0]
    _truncate(record)
    _truncate(model)
    (finished / "results.json").unlink()  # force the recipe to run again
    result = runner.invoke(app, [*tiny, "--out", str(finished)])
    assert result.exit_code == 0, result.output
    assert record.name in result.output and "recomputing" in result.output
    assert model.name in result.output and "retraining" in result.output
    assert "JSONDecodeError" not in result.output and "Traceback" not in result.output
    json.loads(record.read_text())  # rewritten whole
    assert _records(finished / "results.json") == before


def test_truncated_results_json(finished, tiny):
    before = _records(finished / "results.json")
    _truncate(finished / "results.json")
    rep = runner.invoke(app, ["report", str(finished)])
    assert rep.exit_code == 1 and "results.json is not valid JSON" in rep.output
    assert "--out" in rep.output and "JSONDecodeError" not in rep.output
    again = runner.invoke(app, [*tiny, "--out", str(finished)])
    assert again.exit_code == 0 and "results.json is not valid JSON" in again.output, again.output
    assert "0 units computed" in again.output
    assert _records(finished / "results.json") == before
    assert runner.invoke(app, ["report", str(finished)]).exit_code == 0


def test_truncated_run_json_is_a_clear_error_for_run_and_demo(finished, tiny):
    _truncate(finished / "run.json")
    for args in (tiny, ["demo", "--quiet"]):
        result = runner.invoke(app, [*args, "--out", str(finished)])
        assert result.exit_code == 2, result.output
        assert "run.json is not valid JSON" in result.output and "delete" in result.output
        assert "JSONDecodeError" not in result.output


def _interrupt(monkeypatch, owner, name, tiny, out):
    """Run the tiny recipe into ``out`` with ``owner.name`` raising Ctrl-C."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted)
    result = runner.invoke(app, [*tiny, "--out", str(out)])
    assert result.exit_code == 130
    return " ".join(result.output.split())


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, monkeypatch, tiny):
    said = _interrupt(monkeypatch, Store, "record", tiny, tmp_path / "run")
    assert "interrupted" in said and "rerun the same command to resume" in said


def test_ctrl_c_before_anything_is_written_says_so(tmp_path, monkeypatch, tiny):
    import advtransfer.experiments.runner as runner_module

    out = tmp_path / "run"
    said = _interrupt(monkeypatch, runner_module, "execute", tiny, out)
    assert f"Nothing was written to {out}" in said
    assert "resume" not in said and not out.exists()


def test_progress_without_a_terminal_prints_plain_lines(capsys, monkeypatch):
    # pytest's captured streams are not terminals
    assert list(progress.track(range(5), description="training")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("training 5/5 ")  # the loop's end
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)  # every item is past the interval
    list(progress.track(iter(range(3)), description="attacking"))
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["attacking", "1"], ["attacking", "2"],
                                                ["attacking", "3"]]
    assert all(ln.endswith("s") and float(ln.split()[2][:-1]) >= 0 for ln in lines)
    assert "\x1b" not in "".join(lines)  # no bar, no escape codes


def test_cli_run_without_terminal_reports_progress(tmp_path, tiny):
    args = [a for a in tiny if a != "--quiet"]  # --threads 1: no note that depends on the load
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    # a loop's "description done/total elapsed", e.g. "tiny units 3/3 0.0s", and the run's
    # heartbeat "tiny: N units computed, M reused elapsed" (at the start, then after 10 s
    # without any line)
    loops = [ln for ln in lines if not ln.startswith("tiny: ")]
    assert loops and all(ln.split()[-2].count("/") == 1 and ln.endswith("s") for ln in loops)
    assert lines[0] == "tiny: 0 units computed, 0 reused 0.0s"


def test_heartbeat_fills_every_silence_longer_than_the_interval(capsys):
    """Inside one long step (no loop ticking), a line at least every interval; none while
    other lines keep coming; none on a terminal or when disabled."""
    import time

    with progress.heartbeat(lambda: "busy", interval=0.2):
        time.sleep(0.75)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "busy 0.0s" and 2 <= len(lines) <= 5, lines
    assert all(ln.startswith("busy ") and ln.endswith("s") for ln in lines)
    with progress.one_line_warnings(), progress.heartbeat(lambda: "busy", interval=2.0):
        for i in range(8):
            progress.warn(f"a line {i}")
            time.sleep(0.05)
    lines = capsys.readouterr().err.splitlines()
    assert [ln for ln in lines if ln.startswith("warning:")] == [
        f"warning: a line {i}" for i in range(8)]
    assert lines.count("busy 0.0s") == 1 and not any(ln.startswith("busy 0.") and
                                                     ln != "busy 0.0s" for ln in lines)
    with progress.heartbeat(lambda: "busy", enabled=False, interval=0.1):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_no_dev_extras_and_takes_a_cpu_torch_spec(tmp_path):
    root = Path(__file__).resolve().parents[2]
    cpu = "torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    dry = subprocess.run(["make", "-n", "-C", str(root), "demo", f"VENV={tmp_path / 'v'}",
                          f"TORCH_SPEC={cpu}"], capture_output=True, text=True, check=True)
    installs = [ln for ln in dry.stdout.splitlines() if "pip install" in ln]
    assert any(ln.endswith(f"pip install -q {cpu}") for ln in installs), installs
    assert any(ln.endswith("pip install -q -e .") for ln in installs), installs
    assert not any("[dev]" in ln for ln in installs), installs
    test = subprocess.run(["make", "-n", "-C", str(root), "test", f"VENV={tmp_path / 'v'}"],
                          capture_output=True, text=True, check=True)
    assert '-e ".[dev]"' in test.stdout and "-m slow" not in test.stdout
    tiers = subprocess.run(["make", "-n", "-C", str(root), "test-all", f"VENV={tmp_path / 'v'}"],
                           capture_output=True, text=True, check=True).stdout
    assert "pytest" in tiers and "-m slow" in tiers
    assert not (tmp_path / "v").exists()


def test_a_bad_value_caught_by_the_recipe_check_is_a_usage_error(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "digits-distribution", "--quiet", "--out", str(out),
                                 "--set", "shares=[0.0, 2.0]"])
    assert result.exit_code == 2 and "shares must be values in [0, 1]" in result.output
    assert not out.exists()


@pytest.fixture
def small_demo(monkeypatch):
    """`advtransfer demo` on a reduced digits-distribution configuration (seconds, not minutes)."""
    from dataclasses import replace

    from advtransfer.experiments.registry import REGISTRY, get_recipe

    recipe = get_recipe("digits-distribution")
    small = replace(recipe.config(), repeats=1, epochs=2, finetune_epochs=2, steps=1,
                    shares=[0.0, 0.5, 1.0])
    monkeypatch.setitem(REGISTRY, "digits-distribution", replace(recipe, config=lambda: small))


def test_demo_names_and_recomputes_truncated_record_and_results(small_demo, tmp_path):
    out = tmp_path / "demo"
    first = runner.invoke(app, ["demo", "--quiet", "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = _records(out / "results.json")
    record = sorted((out / "records").glob("*.json"))[0]
    _truncate(record)
    _truncate(out / "results.json")
    again = runner.invoke(app, ["demo", "--quiet", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "results.json is not valid JSON" in again.output
    assert record.name in again.output and "1 units computed" in again.output
    assert _records(out / "results.json") == before


def test_a_finished_run_is_reported_to_another_out_without_writing_to_it(finished, tmp_path):
    """``advtransfer report DIR --out OTHER`` only reads DIR (a read-only run can be reported):
    no file of DIR changes and no lock file is made there; OTHER gets the same report."""
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished.rglob("*")
              if p.is_file()}
    other = tmp_path / "elsewhere"
    result = runner.invoke(app, ["report", str(finished), "--out", str(other)])
    assert result.exit_code == 0, result.output
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished.rglob("*")
             if p.is_file()}
    assert after == before
    assert (other / "report.md").read_text() == (finished / "report.md").read_text()
    assert json.loads((other / "results.json").read_text())["correlations"] == json.loads(
        (finished / "results.json").read_text())["correlations"]
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(other)])
    assert missing.exit_code == 1 and "has no results.json" in missing.output


def test_a_resume_with_another_torch_is_refused_unless_allowed(tmp_path, tiny, monkeypatch):
    from advtransfer.experiments import runner as run_module

    out = tmp_path / "run"
    first = runner.invoke(app, [*tiny, "--threads", "1", "--out", str(out)])
    assert first.exit_code == 0, first.output
    files = sorted(p.name for p in out.rglob("*"))
    real = run_module.environment
    monkeypatch.setattr(run_module, "environment", lambda d: {**real(d), "torch": "9.9.9"})
    other = runner.invoke(app, [*tiny, "--threads", "1", "--out", str(out)])
    assert other.exit_code == 2
    said = " ".join(other.output.split())
    assert "another environment (" in said and "torch" in said and "'9.9.9' now" in said
    assert "--allow-environment-change" in said
    assert sorted(p.name for p in out.rglob("*")) == files  # refused: nothing written
    allowed = runner.invoke(app, [*tiny, "--threads", "1", "--out", str(out),
                                  "--allow-environment-change"])
    assert allowed.exit_code == 0, allowed.output
    assert "reused as computed there" in " ".join(allowed.output.split())
