"""The README's Python API example runs as written, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README must hold a Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 5
    alpha1, alpha2, combined, acc, loss = map(float, printed)
    assert 0 < alpha1 and 0 <= alpha2 <= 1 and 0 <= combined and 0 <= acc <= 1 and loss > 0


def test_readme_names_the_two_commands_first():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block
    makefile = (README.parent / "Makefile").read_text()
    assert "demo:" in makefile and "test:" in makefile


def test_submodules_named_in_the_readme_are_reachable_from_the_package():
    import advtransfer

    assert callable(advtransfer.theory.first_order_transferability)
    assert callable(advtransfer.estimators.logme)
    assert callable(advtransfer.rank)


def _tool():
    import importlib.util

    path = README.parent / "tools" / "readme_numbers.py"
    spec = importlib.util.spec_from_file_location("readme_numbers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_readme_numbers_block_has_a_renderer_and_the_check_compares_numbers():
    tool = _tool()
    names = [m.group("name") for m in tool.BLOCK.finditer(README.read_text())]
    assert {"digits-distribution", "synthetic", "synthetic-paper"} <= set(names)
    assert set(names) <= set(tool.TABLES)
    table = "| a | 0.87 (<0.001) | −0.13 [−0.58, 0.40] |\n"
    assert tool.same_numbers(table, table.replace("0.87", "0.88"), 0.02)
    assert not tool.same_numbers(table, table.replace("0.87", "0.57"), 0.02)
    assert not tool.same_numbers(table, table.replace("−0.13", "0.13"), 0.02)
    assert not tool.same_numbers(table, table.replace("| a |", "| b |"), 0.02)


@pytest.mark.slow
def test_readme_demo_table_is_what_the_demo_computes(tmp_path):
    # the README's expected output of `advtransfer demo` is what a run of this code gives
    tool = _tool()
    assert tool.main(["--check", "--only", "digits-distribution", "--runs", str(tmp_path)]) == 0


def test_readme_measure_example_with_a_factory_and_a_cifar_target_runs(tmp_path, monkeypatch):
    # the README's `measure --source mypkg.models:make_net ... --target cifar:resnet18
    # --target-num-classes 10 ...` command, run as written in a directory holding those files
    # (mypkg/ in the working directory and not on the import path, as under the console script)
    import shlex
    import sys

    import torch
    from safetensors.torch import save_file
    from torch import nn
    from typer.testing import CliRunner

    from advtransfer.cli import app
    from advtransfer.models.architectures import resnet18_cifar
    from advtransfer.models.checkpoint import save_model

    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    (command,) = [c for c in lines if c.startswith("advtransfer measure --source mypkg")]
    args = shlex.split(command)[1:]
    assert "cifar:resnet18" in args and "--target-num-classes" in args
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(
        "from torch import nn\n\n\ndef make_net():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n")
    torch.manual_seed(0)
    source = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    save_model(source, tmp_path / "net.safetensors")
    save_model(resnet18_cifar(10), tmp_path / "ref.safetensors")
    save_file({"x": torch.rand(2, 3, 32, 32)}, str(tmp_path / "inputs.safetensors"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        result = CliRunner().invoke(app, [*args, "--n-samples", "2", "--steps", "1", "--quiet"])
    finally:
        for name in ("mypkg.models", "mypkg"):
            sys.modules.pop(name, None)
    assert result.exit_code == 0, result.output
    assert "alpha1" in result.output
