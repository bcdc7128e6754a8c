"""No module imports a higher layer (the layering of the ``advtransfer`` package docstring).

Every import of an ``advtransfer`` module is read with ``ast`` from every file under
src/advtransfer, imports inside functions (lazy imports) included; a module may import modules
of its own layer or of lower ones. Every module must be placed in a layer, so a new module is
placed deliberately."""

from __future__ import annotations

import ast
from pathlib import Path

import advtransfer

SRC = Path(advtransfer.__file__).resolve().parent

# Lowest first. A name stands for that module, or with a trailing "." for a package's modules.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("advtransfer._version", "advtransfer.errors", "advtransfer.fileio",
              "advtransfer.progress", "advtransfer.devices", "advtransfer.executors",
              "advtransfer.methods", "advtransfer.units", "advtransfer.selection.arguments")),
    ("data", ("advtransfer.data", "advtransfer.data.")),
    ("models", ("advtransfer.models.adapters", "advtransfer.models.architectures",
                "advtransfer.models.wrappers", "advtransfer.models.features",
                "advtransfer.models.checkpoint", "advtransfer.models.zoo",
                "advtransfer.models.taskonomy", "advtransfer.models.text",
                "advtransfer.models.digits")),
    ("numerics", ("advtransfer.attacks", "advtransfer.training", "advtransfer.estimators",
                  "advtransfer.estimators.", "advtransfer.stats", "advtransfer.store",
                  "advtransfer.selection.target", "advtransfer.selection.results",
                  "advtransfer.selection.estimation")),
    ("metrics", ("advtransfer.metrics", "advtransfer.reference", "advtransfer.text_attack")),
    ("analyses", ("advtransfer.theory", "advtransfer.knowledge", "advtransfer.report",
                  "advtransfer.report.", "advtransfer.selection.tables")),
    ("facade", ("advtransfer", "advtransfer.models", "advtransfer.models.registry",
                "advtransfer.models.builtin", "advtransfer.selection",
                "advtransfer.selection.candidates", "advtransfer.selection.scoring")),
    ("experiments", ("advtransfer.experiments", "advtransfer.experiments.")),
    ("cli", ("advtransfer.cli",)),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ("advtransfer", *path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer index of ``module`` (an exact name wins over a package prefix)."""
    for exact in (True, False):
        for index, (_, names) in enumerate(LAYERS):
            for name in names:
                if (module == name) if exact else (name.endswith(".")
                                                   and module.startswith(name)):
                    return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py "
                         "and to the layering in the advtransfer package docstring")


def imported(module: str, path: Path) -> set[str]:
    """The advtransfer modules ``module`` imports, at the top or inside functions."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:  # `from advtransfer.data import taskonomy` is a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "advtransfer" or m.startswith("advtransfer.")}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import of a higher layer, as ``module (layer) imports other (layer)``."""
    found = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        found += [f"{module} ({LAYERS[own][0]}) imports {m} ({LAYERS[layer_of(m)][0]})"
                  for m in sorted(imported(module, path)) if layer_of(m) > own]
    return found


def test_no_module_imports_a_higher_layer():
    violations = upward_imports(MODULES)
    assert not violations, "imports of a higher layer:\n" + "\n".join(violations)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The reader finds imports inside functions and relative ones (so the test can fail)."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from advtransfer.cli import app\n"
                    "from . import metrics\nfrom .models import registry\n")
    assert imported("advtransfer.theory", path) == {
        "advtransfer.cli", "advtransfer.metrics", "advtransfer.models.registry"}
    assert layer_of("advtransfer.cli") > layer_of("advtransfer.theory")
    assert upward_imports({"advtransfer.theory": path}) == [
        "advtransfer.theory (analyses) imports advtransfer.cli (cli)",
        "advtransfer.theory (analyses) imports advtransfer.models.registry (facade)"]
