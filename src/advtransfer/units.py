"""The kinds of stored unit of work, each with a version, and the fingerprint of its code.

A unit's key (:func:`advtransfer.store.unit_key`) is derived from its kind, the kind's
**version** and the canonical JSON of its whole configuration, which holds the keys of the units
it depends on (a fine-tune names its source model's key). Bumping a kind's version therefore
recomputes exactly the units of that kind and the units built on them; every other unit is
reused (``docs/design.md §4``).

Forgetting a bump is made impossible by a recorded **fingerprint** per kind
(``tests/unit_fingerprints.json``, checked by ``tests/test_unit_versions.py``): sha256 over
the code that can change a unit of the kind, namely

* every module of the package in which the kind's name appears as a string literal (where its
  units are stored, and where the stage functions that store them are called), plus the
  modules a kind declares in :attr:`UnitKind.modules`,
* and every package module those import, statically, at any depth (``import`` and ``from ...
  import`` anywhere in the module, functions included),

each module reduced to its syntax tree without docstrings (``ast.unparse``), so comments,
docstrings and formatting do not count. Modules that only present results
(:data:`PRESENTATION`, with their submodules) are left out. When the fingerprint of a kind
changes and its version does not, the test fails and says what to do: bump the version when
results may change, or, for a change that cannot change any stored result (a rename, a
refactor with identical numbers, checked by the tests), record the new fingerprint with ``python
tools/unit_versions.py --write --same-results KIND``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from advtransfer.errors import AdvTransferError

__all__ = ["KINDS", "PACKAGE_KINDS", "PRESENTATION", "UnitKind", "code_modules", "fingerprint",
           "get_kind"]

_PACKAGE = "advtransfer"
_ROOT = Path(__file__).resolve().parent

#: Modules that format, print or report results and cannot change a stored unit: left out of
#: every fingerprint (with this module itself, whose versions must not change fingerprints).
PRESENTATION: frozenset[str] = frozenset({
    "advtransfer.cli", "advtransfer.report", "advtransfer.progress", "advtransfer.units",
    "advtransfer.errors", "advtransfer._version",
})


@dataclass(frozen=True)
class UnitKind:
    """A kind of stored unit: its name (the prefix of its keys), its version (bumped whenever
    its computation changes) and what it holds."""

    name: str
    version: int
    doc: str
    #: modules whose code computes this kind's units besides those naming it (see module docs)
    modules: tuple[str, ...] = ()


_KINDS = (
    UnitKind("source", 1, "a trained source model (safetensors)"),
    UnitKind("reference", 1, "a trained reference (target) model (safetensors)"),
    UnitKind("accuracy", 1, "a stored model's accuracy and loss on named data"),
    UnitKind("direct-accuracy", 1, "a CIFAR-10 model's accuracy on STL-10's shared classes"),
    UnitKind("transfer", 1, "knowledge transfer of a source to a target task"),
    UnitKind("reference-attack", 1, "a reference model's attack on the attacked inputs "
             "(tensors), shared by every source compared with it"),
    UnitKind("adversarial", 1, "alpha1/alpha2/combined of a source against a reference"),
    UnitKind("synthetic-target", 1, "the synthetic recipe's target network"),
    UnitKind("synthetic-source", 1, "one perturbed source of the synthetic recipe"),
    UnitKind("synthetic-paper-source", 1, "one source of the synthetic recipe's paper mode"),
    UnitKind("taskonomy-matrix", 1, "one Taskonomy task pair's measurements"),
    UnitKind("full-finetune-grid", 1, "one full fine-tune of the ground truth's grid search"),
    UnitKind("full-finetune", 1, "the ground truth: a full fine-tune at the chosen setting"),
    UnitKind("selection-finetune", 1, "a linear probe (head-only fine-tune) of a candidate"),
    UnitKind("selection-adversarial", 1, "a candidate's adversarial scores"),
    UnitKind("selection-estimators", 1, "a candidate's transferability-estimator scores"),
    UnitKind("zoo-model", 1, "the identity of a pretrained zoo model and its weights"),
    UnitKind("zoo-adversarial", 1, "a zoo candidate's adversarial scores"),
    UnitKind("zoo-estimators", 1, "a zoo candidate's estimator scores"),
    UnitKind("zoo-finetune-grid", 1, "one fine-tune of a zoo model's grid search"),
    UnitKind("zoo-finetune", 1, "a zoo model's fine-tune at the chosen setting"),
    UnitKind("text-embedding", 1, "the text-datasets recipe's frozen word-embedding table over "
             "the shared vocabulary of its text files (tensors)"),
    UnitKind("text-model", 1, "a text classifier trained on one text dataset's training split "
             "(safetensors)"),
    UnitKind("text-selection", 1, "a text source's estimator and feature-space adversarial "
             "scores for one target dataset"),
    UnitKind("text-snapped", 1, "one text model's snapped word-substitution attack on a target "
             "dataset's test texts (tensors: adversarial ids, changed tokens, success)"),
    UnitKind("text-snapped-adversarial", 1, "alpha1/alpha2/combined of a text source against "
             "a reference from their snapped attacks"),
)

#: The package's own kinds, by name (those with a recorded fingerprint).
PACKAGE_KINDS: tuple[str, ...] = tuple(k.name for k in _KINDS)
#: Every kind of unit the store accepts, by name (a test may declare kinds of its own here).
KINDS: dict[str, UnitKind] = {k.name: k for k in _KINDS}


def get_kind(name: str) -> UnitKind:
    """The declared kind ``name``; an :class:`AdvTransferError` for an undeclared one (a unit
    of an undeclared kind would have no version and no fingerprint)."""
    try:
        return KINDS[name]
    except KeyError:
        raise AdvTransferError(f"unit kind {name!r} is not declared in advtransfer.units.KINDS "
                               f"(declared: {', '.join(sorted(KINDS))})") from None


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out: dict[str, Path] = {}
    for path in sorted(_ROOT.rglob("*.py")):
        parts = list(path.relative_to(_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([_PACKAGE, *parts])] = path
    return out


@functools.cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"))


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its code (absolute or relative):
    ``import a.b`` and ``from a import b`` give ``a.b`` when it is a module, else ``a`` (an
    attribute of ``a``'s ``__init__``). The parent packages Python initialises on the way
    are not counted: their ``__init__`` re-exports do not compute anything."""
    modules = _modules()
    is_package = modules[name].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                anchor = parts[: len(parts) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    return found


def _names_string(name: str, text: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(_tree(name)))


@functools.cache
def code_modules(kind: str) -> tuple[str, ...]:
    """The modules whose code a unit of ``kind`` depends on (see the module docs), sorted."""
    declared = get_kind(kind)
    todo = [m for m in _modules() if _names_string(m, kind)] + list(declared.modules)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or any(name == p or name.startswith(f"{p}.") for p in PRESENTATION):
            continue
        if importlib.util.find_spec(name) is None:  # pragma: no cover - a declared typo
            raise AdvTransferError(f"unit kind {kind!r} declares module {name!r}, which does "
                                   "not exist")
        seen.add(name)
        todo.extend(_imports(name))
    return tuple(sorted(seen))


def _without_docstrings(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@functools.cache
def _module_digest(name: str) -> str:
    tree = ast.parse(_modules()[name].read_text(encoding="utf-8"))
    return hashlib.sha256(_without_docstrings(tree).encode()).hexdigest()


def fingerprint(kind: str) -> str:
    """16 hex digits of sha256 over the docstring-free code of :func:`code_modules`."""
    digest = hashlib.sha256()
    for name in code_modules(kind):
        digest.update(f"{name}\0{_module_digest(name)}\0".encode())
    return digest.hexdigest()[:16]
