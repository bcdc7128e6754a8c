"""Checks of the library's own source text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "advtransfer"
#: ``{name.attr}``, ``{name!r}`` or ``{name:.3f}``: a placeholder of an f-string
PLACEHOLDER = re.compile(r"\{[a-z_]\w*((\.[a-z_]\w*)+(![rsa])?|![rsa]|:[.<>^+,%0-9]+[dfegs%]?)\}")
#: templates that another library fills in (rich's progress columns)
OTHERS = ("{task.",)


def _plain_strings(tree: ast.AST):
    """String constants but docstrings, the literal parts of f-strings included (``"a {x.y}"
    f"{z}"`` is one f-string whose first part keeps its braces literally)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                   if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                        ast.AsyncFunctionDef))
                   and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def test_no_plain_string_holds_an_f_string_placeholder():
    """A report once printed ``Adversarial: {c.solver} {c.norm} eps={c.eps}`` literally: an
    f-prefix missing on one piece of a concatenated message. No plain string of the library
    holds such a placeholder unless it is formatted with ``.format`` on the spot."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        formatted = {id(node.func.value) for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                     and node.func.attr in ("format", "format_map")}
        for node in _plain_strings(tree):
            if id(node) not in formatted and PLACEHOLDER.search(node.value) \
                    and not any(t in node.value for t in OTHERS):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value[:70]!r}")
    assert not found, "plain strings with f-string placeholders:\n" + "\n".join(found)


def test_the_placeholder_check_finds_a_missing_f_prefix():
    tree = ast.parse('c = 1\nmsg = f"a {c}" + "eps={c.eps}, {c.norm}" + "plain {x: y}"\n'
                     'two = "solver {c.solver}, " f"{c.steps} steps"\n')
    hits = [n.value for n in _plain_strings(tree) if PLACEHOLDER.search(n.value)]
    assert sorted(hits) == ["eps={c.eps}, {c.norm}", "solver {c.solver}, "]
