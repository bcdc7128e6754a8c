"""The README's Python API example runs as written, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

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
    import sys

    path = README.parent / "tools" / "readme_numbers.py"
    spec = importlib.util.spec_from_file_location("readme_numbers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("readme_numbers", module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules["readme_numbers"])
    return sys.modules["readme_numbers"]


def test_every_readme_numbers_block_has_a_renderer_and_the_check_compares_numbers():
    tool = _tool()
    names = [m.group("name") for m in tool.BLOCK.finditer(README.read_text())]
    assert {"digits-distribution", "synthetic", "synthetic-paper"} <= set(names)
    assert set(names) <= set(tool.TABLES)
    table = ("| metric | r | cost |\n|---|---:|---:|\n"
             "| a | 0.50 ± 0.10 | ≈0.04 |\n| b | −0.20 ± 0.05 | ≈0.10 |\n"
             "\nSeed agreement 0.70 ± 0.02; 12 rows; reference 0.981.\n")

    def diff(fresh: str) -> list[str]:
        return tool.differences(table, fresh, n_seeds=3)

    assert diff(table) == []
    # a mean may move by 4.5 standard errors of the difference of two 3-seed means, sigma the
    # largest of the figure's sds (0.10) and its column's root mean square sd (0.079): 0.367
    assert diff(table.replace("0.50 ± 0.10", "0.85 ± 0.10")) == []
    assert diff(table.replace("0.50 ± 0.10", "0.89 ± 0.10"))
    assert diff(table.replace("−0.20 ± 0.05", "0.20 ± 0.05"))  # a sign flip is stale
    assert diff(table.replace("0.70 ± 0.02", "0.72 ± 0.02")) == []  # text: the line's own sd
    assert diff(table.replace("0.70 ± 0.02", "0.80 ± 0.02"))  # beyond its 0.073
    swapped = table.replace("| a | 0.50 ± 0.10 | ≈0.04 |\n| b | −0.20 ± 0.05 | ≈0.10 |",
                            "| b | −0.20 ± 0.05 | ≈0.10 |\n| a | 0.50 ± 0.10 | ≈0.04 |")
    assert swapped != table and diff(swapped) == []  # rows are matched by label, not order
    assert diff(table.replace("≈0.04", "≈0.90")) == []  # timings are not compared
    assert diff(table.replace("| a |", "| c |"))
    assert diff(table.replace("12 rows", "15 rows"))  # a number that is not measured over seeds
    assert diff(table.replace("0.981", "0.95")) == [] and diff(table.replace("0.981", "0.5"))
    assert diff(table.replace("reference", "referee"))


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
