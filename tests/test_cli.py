from __future__ import annotations

import json

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
    payload = json.loads(out.read_text())
    assert payload["source_to_target"]["n_samples"] == 16
    assert 0 <= payload["target_to_source"]["alpha2"] <= 1


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


def test_bad_options_are_usage_errors_exit_2_and_runtime_errors_exit_1():
    usage = [(["--eps", "0"], "eps"), (["--norm", "l3"], "norm"), (["--bounds", "x"], "--bounds"),
             (["--device", "tpu"], "--device"), (["--n-samples", "0"], "n-samples")]
    runtime = [(["--data", "nope"], "--data"), (["--source", "no_such_model"], "no_such_model")]
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
