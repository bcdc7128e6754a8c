from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import advtransfer
from advtransfer.cli import app
from advtransfer.models.architectures import digits_mlp
from advtransfer.models.checkpoint import save_model

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and advtransfer.__version__ in result.output


def test_measure_builtin_pair_writes_json(tmp_path):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["measure", "--n-samples", "16", "--steps", "2", "--quiet",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "alpha1" in result.output and "S->T" in result.output
    assert "attack convergence: source" in result.output
    payload = json.loads(out.read_text())
    assert payload["source_to_target"]["n_samples"] == 16
    assert 0 <= payload["target_to_source"]["alpha2"] <= 1


def test_measure_conventions_square_alpha2_and_combined_only(tmp_path):
    got = {}
    for convention in ("icml", "authors"):
        out = tmp_path / f"{convention}.json"
        result = runner.invoke(app, ["measure", "--n-samples", "16", "--steps", "2", "--quiet",
                                     "--convention", convention, "--out", str(out)])
        assert result.exit_code == 0, result.output
        got[convention] = json.loads(out.read_text())["source_to_target"]
    icml, authors = got["icml"], got["authors"]
    assert authors["convention"] == "authors" and icml["convention"] == "icml"
    for key in ("alpha1", "alpha1_median", "alpha1_ladv"):
        assert authors[key] == pytest.approx(icml[key])
    assert authors["alpha2"] == pytest.approx(icml["alpha2"] ** 2)
    assert authors["combined"] == pytest.approx(icml["combined"] ** 2)
    help_text = runner.invoke(app, ["measure", "--help"], env={"COLUMNS": "200"}).output
    assert "paper form" not in help_text and "authors' image code" in help_text


def test_measure_with_factory_and_safetensors_weights_and_data(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "mlp.safetensors"
    save_model(digits_mlp(10, hidden=8), weights)
    data = tmp_path / "x.safetensors"
    save_file({"x": torch.rand(8, 1, 8, 8)}, str(data))
    spec = "advtransfer.models.architectures:digits_mlp"
    result = runner.invoke(app, ["measure", "--source", spec, "--source-weights", str(weights),
                                 "--target", "digits-linear", "--data", str(data), "--quiet",
                                 "--steps", "2", "--solver", "first_order"])
    # digits_mlp's default hidden width (64) does not match the 8-wide weights: a clear runtime
    # error (exit 1)
    assert result.exit_code == 1 and "does not fit" in result.output
    save_model(digits_mlp(10), weights)
    result = runner.invoke(app, ["measure", "--source", spec, "--source-weights", str(weights),
                                 "--target", "digits-linear", "--data", str(data), "--quiet",
                                 "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "8 samples" in result.output
    # SPEC=WEIGHTS as in matrix and rank, the same numbers; both forms at once is refused
    inline = runner.invoke(app, ["measure", "--source", f"{spec}={weights}",
                                 "--target", "digits-linear", "--data", str(data), "--quiet",
                                 "--steps", "2"])
    assert inline.exit_code == 0, inline.output
    assert _numbers(inline.output) == _numbers(result.output)
    both = runner.invoke(app, ["measure", "--source", f"{spec}={weights}", "--source-weights",
                               str(weights), "--quiet"])
    assert both.exit_code == 2 and "give them once" in both.output


def _numbers(text: str) -> list[str]:
    import re

    return re.findall(r"\d+\.\d{4}", text)


def test_measure_output_fits_80_columns():
    """Every line of measure's output within 80 columns, no value cut short."""
    result = runner.invoke(app, ["measure", "--n-samples", "16", "--steps", "2", "--quiet",
                                 "--threads", "1"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.output, result.output
    assert any("S->T" in ln and "alpha1" not in ln and len(_numbers(ln)) >= 4 for ln in lines)


def test_bad_options_are_usage_errors_exit_2_and_runtime_errors_exit_1():
    usage = [(["--eps", "0"], "eps"), (["--norm", "l3"], "norm"), (["--bounds", "x"], "--bounds"),
             (["--device", "tpu"], "--device"), (["--n-samples", "0"], "n-samples"),
             (["--convention", "paper"], "convention"),
             (["--source", "no_such_model"], "no_such_model")]
    runtime = [(["--data", "nope"], "--data")]
    for args, needle in usage + runtime:
        result = runner.invoke(app, ["measure", "--quiet", "--steps", "1", *args])
        assert result.exit_code == (2 if (args, needle) in usage else 1), (args, result.output)
        assert needle in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_matrix_command(tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["matrix", "digits-linear", "digits-mlp", "--n-samples", "8",
                                 "--steps", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["names"] == ["digits-linear", "digits-mlp"] and m["alpha1"][0][0] == 1.0


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # content, not layout


def test_help_shows_choices_real_defaults_and_no_bool_metavars():
    for command in (["measure"], ["matrix"], ["rank"], ["run"], ["demo"], ["report"], ["list"]):
        text = _help(*command)
        assert "<bool>" not in text, (command, text)
    measure = _help("measure")
    assert "--norm [l2|linf]" in measure and "--solver [pgd|first_order]" in measure
    assert "--objective [deviation|ce]" in measure and "<str>" not in measure
    # attacks.py: eps for one step; else 2*eps (deviation), 2.5*eps/steps (ce)
    assert "eps when --steps 1" in measure and "2*eps" in measure and "2.5*eps/steps" in measure
    assert "see docs" not in measure
    rank = _help("rank")
    assert "combined (target -> source; _s2t: source -> target" in rank
    from advtransfer.methods import BASE_FEATURE_METHODS, POOL_METHODS
    assert all(m in rank for m in (*BASE_FEATURE_METHODS, *POOL_METHODS, "lgc", "ped_"))
    assert "--seed" in _help("demo")


def test_choice_options_refuse_other_values_as_usage_errors():
    result = runner.invoke(app, ["measure", "--norm", "l3"])
    assert result.exit_code == 2 and "l2" in result.output and "linf" in result.output


def test_n_samples_above_the_data_says_so():
    result = runner.invoke(app, ["measure", "--quiet", "--steps", "1", "--solver", "first_order",
                                 "--source", "digits-linear", "--target", "digits-linear",
                                 "--n-samples", "100000"])
    assert result.exit_code == 0, result.output
    # the bundled digits test split holds 540 inputs
    assert "--n-samples 100000" in result.output and "using all 540" in result.output
    assert "540 samples" in result.output


def test_demo_passes_seed_like_run(monkeypatch):
    import advtransfer.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "_run_and_report", lambda recipe, out, **kw: seen.update(kw))
    assert runner.invoke(app, ["demo", "--seed", "7", "--quiet"]).exit_code == 0
    assert seen["seed"] == 7


class _FakeRanking:
    methods = ["alpha1", "alpha2", "combined", "logme", "leep", "nce", "hscore",
               "regularized_hscore", "transrate", "gbc"]

    def table(self):
        names = ["mypkg.models:resnet_like=weights/a-long-file-name.safetensors", "digits-mlp"]
        return [{"rank": i + 1, "candidate": n,
                 **{m: -0.123456 * (i + 1) * (k + 1) for k, m in enumerate(self.methods)}}
                for i, n in enumerate(names)]


def test_rank_table_at_80_columns_keeps_every_column(monkeypatch, capsys):
    from rich.console import Console

    import advtransfer.cli as cli

    monkeypatch.setattr(cli, "console", Console(width=80, color_system=None))
    cli._print_rank_table(_FakeRanking(), "ranking")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    for m in _FakeRanking.methods:
        assert f" {m}" in out, m  # every header whole
    for row in _FakeRanking().table():
        for m in _FakeRanking.methods:
            assert cli._cell(row[m]) in out
    tables = out.count(" rank ")
    assert tables >= 2 and out.count("digits-mlp") == tables  # rank + name in every part


def test_duplicate_candidates_are_refused_or_named_by_their_weights():
    from advtransfer.cli import _unique_names

    assert _unique_names(["m:f=a.pt", "m:f=b.pt", "digits-mlp"], "-c") == [
        "m:f=a.pt", "m:f=b.pt", "digits-mlp"]
    result = runner.invoke(app, ["rank", "--reference", "digits-cnn", "-c", "digits-mlp",
                                 "-c", "digits-mlp"])
    assert result.exit_code == 2 and "digits-mlp is given more than once" in result.output
    result = runner.invoke(app, ["rank", "--reference", "digits-cnn", "-c", "digits-mlp",
                                 "--methods", "alpha1,nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_model_selection_summary_prints_target_column_and_tau_table(capsys):
    from advtransfer.cli import _print_summary

    records = [{"source": s, "target": t, "transfer_accuracy": 0.5, "alpha1": 0.1}
               for t in ("0-4", "parity") for s in ("mlp64/digits10", "cnn8/ge5")]
    tau = {"alpha1": {"0-4": 0.25, "parity": 0.75, "mean": 0.5},
           "logme": {"0-4": 0.9, "parity": 0.7, "mean": 0.8}}
    _print_summary({"records": records, "selection": {"weighted_tau": tau},
                    "report": {"title": "t", "outcomes": ["transfer_accuracy"],
                               "metrics": ["alpha1"], "labels": {"logme": "LogME"}}})
    out = capsys.readouterr().out
    assert "target" in out and "parity" in out
    lines = out.splitlines()
    logme = next(ln for ln in lines if ln.strip().startswith("LogME")).split()
    alpha = next(ln for ln in lines if ln.strip().startswith("alpha1 ")).split()
    assert logme[1:] == ["0.9", "0.7", "0.8"] and alpha[1:] == ["0.25", "0.75", "0.5"]
    assert lines.index(next(ln for ln in lines if ln.strip().startswith("LogME"))) < \
        lines.index(next(ln for ln in lines if ln.strip().startswith("alpha1 ")))  # best first


class _NotATensor:
    pass


def test_messages_name_only_what_can_be_typed(tmp_path):
    from pathlib import Path

    from advtransfer.cli import load_cli_model
    from advtransfer.errors import AdvTransferError
    from advtransfer.models.zoo import from_name

    bad = tmp_path / "net.pt"
    torch.save({"weight": _NotATensor()}, bad)
    result = runner.invoke(app, ["measure", "--quiet", "--source",
                                 "advtransfer.models.architectures:digits_mlp",
                                 "--source-weights", str(bad)])
    assert result.exit_code == 1 and "refused to load" in result.output
    assert "_NotATensor" in result.output  # what was found
    flat = result.output.replace("`", "")
    assert "weights_only=False" not in flat and "set to False" not in flat
    # an architecture without weights: the hint is typeable, and names no torchvision lenet
    # (lenet needs num_classes, so no 'random' either; digits-cnn builds without arguments)
    result = runner.invoke(app, ["measure", "--quiet", "--source", "lenet"])
    assert result.exit_code == 1 and "lenet=FILE in matrix" in result.output
    assert "torchvision.models:lenet" not in result.output and "random" not in result.output
    result = runner.invoke(app, ["measure", "--quiet", "--source", "resnet18"])
    assert result.exit_code == 2  # ambiguous: a usage error, before anything is loaded
    assert "cifar:resnet18" in result.output and "tv:resnet18" in result.output
    result = runner.invoke(app, ["matrix", "--quiet", "two-layer-sigmoid", "digits-cnn"])
    assert "random" not in result.output
    from advtransfer.selection import load_candidate

    with pytest.raises(AdvTransferError, match=r"cifar:digits-cnn=FILE\|random in matrix"):
        load_candidate("cifar:digits-cnn")
    assert isinstance(load_candidate("digits-cnn", "random"), torch.nn.Module)  # as hinted
    untrained = load_cli_model("digits-cnn", Path("random"), seed=0, quiet=True)  # CLI form
    assert sum(p.numel() for p in untrained.parameters()) > 0
    # 'random' typed on the command line reaches the loader (a torchvision name here)
    assert isinstance(load_cli_model("mobilenet_v3_small", Path("random"), seed=0, quiet=True),
                      torch.nn.Module)
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(AdvTransferError, match=r"pip install 'advtransfer\[timm\]'"):
            from_name("timm:resnet18")


def test_every_attacking_command_takes_the_same_attack_options(tmp_path):
    """measure, matrix and rank share one set of attack options (one AttackConfig each):
    --step-size, --no-random-start and --iterate reach the attack in all three."""
    for command in (["measure"], ["matrix", "digits-mlp", "digits-linear"],
                    ["rank", "--reference", "digits-cnn", "-c", "digits-mlp", "-c",
                     "digits-linear", "--methods", "alpha1"]):
        help_text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
        for option in ("--eps", "--norm", "--objective", "--solver", "--steps", "--step-size",
                       "--no-random-start", "--tol", "--iterate", "--bounds"):
            assert option in help_text, (command[0], option)
        out = tmp_path / f"{command[0]}.json"
        result = runner.invoke(app, [*command, "--n-samples", "16", "--steps", "2",
                                     "--step-size", "0.25", "--no-random-start", "--iterate",
                                     "last", "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        config = json.loads(out.read_text())["config"]
        assert config["step_size"] == 0.25 and config["random_start"] is False, command[0]
        assert config["iterate"] == "last", command[0]
        bad = runner.invoke(app, [*command, "--step-size", "-1", "-q"])
        assert bad.exit_code == 2 and "step_size" in bad.output, command[0]


@pytest.mark.parametrize("command", [["demo"], ["run", "synthetic", "--out", "x"],
                                     ["measure", "--source", "a", "--target", "b"],
                                     ["matrix", "a", "b"],
                                     ["rank", "--reference", "a", "-c", "b"]])
def test_threads_is_set_before_the_command_and_checked(monkeypatch, command):
    """--threads N sets torch's thread count before the command does anything; a bad value is
    a usage error (exit 2) naming the option, before anything is loaded."""
    import advtransfer.cli as cli

    seen = []

    def stop(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise SystemExit(0)

    for name in ("_run_and_report", "load_cli_model", "_check_specs", "_check_out_file"):
        monkeypatch.setattr(cli, name, stop)
    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, [*command, "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert seen and seen[0] == 1
    finally:
        torch.set_num_threads(before)
    bad = runner.invoke(app, [*command, "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output and len(seen) == 1


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [["demo", "--out", "/proc/forbidden"],
                                     ["run", "synthetic", "--out", "/proc/forbidden"],
                                     ["measure", "--source", "a", "--target", "b",
                                      "--out", "/proc/forbidden/x.json"],
                                     ["matrix", "a", "b", "--out", "/proc/forbidden/x.json"],
                                     ["rank", "--reference", "a", "-c", "b",
                                      "--out", "/proc/forbidden/x.csv"]])
def test_an_unwritable_out_is_a_usage_error_before_any_work(monkeypatch, command):
    """/proc refuses new files even to root, for whom os.access says yes: --out there is
    exit 2 before any model is built (a model build here fails the test)."""
    import advtransfer.models.registry as registry

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(registry, "create", no_work)
    monkeypatch.setattr(registry, "resolve_spec", lambda spec: spec)
    result = runner.invoke(app, [*command, "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and "/proc" in result.output


@pytest.mark.parametrize("command", [["measure", "--source", "a", "--target", "b"],
                                     ["matrix", "a", "b"],
                                     ["rank", "--reference", "a", "-c", "b"]])
def test_a_missing_data_file_is_reported_before_any_model_is_built(monkeypatch, command):
    import advtransfer.models.registry as registry

    def no_work(*args, **kwargs):
        raise AssertionError("a model was built before --data was read")

    monkeypatch.setattr(registry, "create", no_work)
    monkeypatch.setattr(registry, "resolve_spec", lambda spec: spec)
    result = runner.invoke(app, [*command, "--data", "missing.safetensors", "--threads", "1"])
    assert result.exit_code == 1, result.output
    assert "--data must be 'digits' or an existing .safetensors file" in result.output


def test_measure_and_matrix_give_the_same_pair(tmp_path):
    """The same pair with the same defaults: measure's S->T and T->S are matrix's off-diagonal
    cells (same models, seeds, attack draws), run in one process on one machine."""
    common = ["--n-samples", "32", "--steps", "2", "--quiet", "--threads", "1"]
    pair, mat = tmp_path / "pair.json", tmp_path / "matrix.json"
    assert runner.invoke(app, ["measure", *common, "--out", str(pair)]).exit_code == 0
    assert runner.invoke(app, ["matrix", "digits-mlp", "digits-cnn", *common,
                               "--out", str(mat)]).exit_code == 0
    p, m = json.loads(pair.read_text()), json.loads(mat.read_text())
    for metric in ("alpha1", "alpha2", "combined"):
        assert m[metric][0][1] == pytest.approx(p["source_to_target"][metric], rel=1e-6)
        assert m[metric][1][0] == pytest.approx(p["target_to_source"][metric], rel=1e-6)


def test_models_timm_without_timm_says_how_to_get_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # not installed
    result = runner.invoke(app, ["models", "timm"])
    assert result.exit_code == 1
    assert "timm is not installed" in result.output and "advtransfer[timm]" in result.output
    every = runner.invoke(app, ["models"])  # the others are listed, with the same note
    assert every.exit_code == 0 and "builtin:digits-cnn" in every.output
    assert "timm is not installed" in every.output


def test_a_typo_in_a_model_name_suggests_each_close_name_once():
    result = runner.invoke(app, ["measure", "--source", "digits-cn", "--threads", "1"])
    assert result.exit_code == 2
    close = result.output.split("Close matches:")[1].split(".")[0]
    names = [n.strip() for n in close.split(",")]
    assert names[0] == "digits-cnn" and len(names) == len(set(names))
    assert "`advtransfer models`" in " ".join(result.output.split())


def test_list_recipe_shows_its_set_keys_and_a_typo_gets_a_suggestion():
    import dataclasses

    from advtransfer.experiments import all_recipes

    for recipe in all_recipes():
        result = runner.invoke(app, ["list", recipe.name])
        assert result.exit_code == 0, (recipe.name, result.output)
        shown = {ln.split()[0] for ln in result.stdout.splitlines() if ln.strip()}
        assert {f.name for f in dataclasses.fields(recipe.config)} <= shown, recipe.name
    assert runner.invoke(app, ["list", "synthetc"]).exit_code == 2
    typo = runner.invoke(app, ["run", "synthetic", "--set", "scale=1", "--out", "x"])
    assert typo.exit_code == 2
    assert "Did you mean 'scale' -> 'scales'?" in " ".join(typo.output.split())


def test_auto_threads_says_when_it_takes_fewer_cores_but_not_for_the_users_setting(monkeypatch):
    import advtransfer.cli as cli
    import advtransfer.devices as devices

    monkeypatch.setattr(cli, "_run_and_report", lambda *a, **k: None)
    monkeypatch.setattr(devices, "free_cores", lambda: 1)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        busy = runner.invoke(app, ["demo"])
        assert busy.exit_code == 0 and "using 1 of 2 CPU threads (auto)" in busy.output
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        chosen = runner.invoke(app, ["demo"])
        assert chosen.exit_code == 0 and "CPU threads" not in chosen.output
    finally:
        torch.set_num_threads(before)
