"""Every public name of ``advtransfer`` is visible to static tools (type checkers, IDEs): each
name of ``__all__`` is bound by an import in the package's ``__init__`` (the heavy ones under
``TYPE_CHECKING``, imported on first use at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

import advtransfer


def test_every_public_name_is_bound_statically() -> None:
    tree = ast.parse(Path(advtransfer.__file__).read_text())
    bound = {alias.asname or alias.name for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert set(advtransfer.__all__) - {"__version__"} <= bound
    assert advtransfer.rank.__module__ == "advtransfer.selection"


def test_docstrings_cite_the_design_inside_the_project() -> None:
    """Docstrings cite docs/design.md by section, a file of the project, and each cited
    section exists."""
    import re

    root = Path(advtransfer.__file__).resolve().parents[2]
    design = (root / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", design, flags=re.M))
    cited = []
    for path in Path(advtransfer.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "DESIGN.md" not in text, path
        cited += re.findall(r"docs/design\.md §(\d+)", text)
    assert cited and set(cited) <= sections
