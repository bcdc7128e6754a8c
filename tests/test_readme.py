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
