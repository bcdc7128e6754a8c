"""The kinds of stored unit of work, each with a version, and the fingerprint of its code.

A unit's key (:func:`unit_key`) is derived from its kind, the kind's
**version** and the canonical JSON of its whole configuration, which holds the keys of the units
it depends on (a fine-tune names its source model's key). Bumping a kind's version therefore
recomputes exactly the units of that kind and the units built on them; every other unit is
reused (``docs/design.md §4``).

Forgetting a bump is made impossible by a recorded **fingerprint** per kind
(``tests/unit_fingerprints.json``, checked by ``tests/test_unit_versions.py``): sha256 over
the code that can change a unit of the kind, namely

* every module of the package in which the kind's name appears as a string literal (where its
  configuration class is declared, ``class X(UnitConfig, kind="KIND")``), that refers to that
  class by name (where its units are configured, built and stored) or to a public function
  that does (a stage such as ``stages.transfer``, whose callers prepare the unit's data), plus
  the modules a kind declares in :attr:`UnitKind.modules`,
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
import dataclasses
import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = ["CONFIGS", "KINDS", "PACKAGE_KINDS", "PRESENTATION", "UnitConfig", "UnitKind",
           "canonical", "code_modules", "fingerprint", "get_kind", "identity_key", "seed_for",
           "unit_key"]

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


# version 2 everywhere: the typed configurations (every field, defaults included, in the key)
_KINDS = (
    UnitKind("source", 2, "a trained source model (safetensors)"),
    UnitKind("reference", 2, "a trained reference (target) model (safetensors)"),
    UnitKind("accuracy", 2, "a stored model's accuracy and loss on named data"),
    UnitKind("direct-accuracy", 2, "a CIFAR-10 model's accuracy on STL-10's shared classes"),
    UnitKind("transfer", 3, "knowledge transfer of a source to a target task"),
    UnitKind("reference-attack", 2, "a reference model's attack on the attacked inputs "
             "(tensors), shared by every source compared with it"),
    UnitKind("adversarial", 2, "alpha1/alpha2/combined of a source against a reference"),
    UnitKind("synthetic-target", 2, "the synthetic recipe's target network"),
    UnitKind("synthetic-source", 2, "one perturbed source of the synthetic recipe"),
    UnitKind("synthetic-paper-source", 2, "one source of the synthetic recipe's paper mode"),
    UnitKind("taskonomy-matrix", 2, "one Taskonomy task pair's measurements"),
    UnitKind("full-finetune-grid", 2, "one full fine-tune of the ground truth's grid search"),
    UnitKind("full-finetune", 2, "the ground truth: a full fine-tune at the chosen setting"),
    UnitKind("selection-finetune", 2, "a linear probe (head-only fine-tune) of a candidate"),
    UnitKind("selection-adversarial", 2, "a candidate's adversarial scores"),
    UnitKind("selection-estimators", 2, "a candidate's transferability-estimator scores"),
    UnitKind("zoo-model", 2, "the identity of a pretrained zoo model and its weights"),
    UnitKind("zoo-adversarial", 2, "a zoo candidate's adversarial scores"),
    UnitKind("zoo-estimators", 2, "a zoo candidate's estimator scores"),
    UnitKind("zoo-finetune-grid", 2, "one fine-tune of a zoo model's grid search"),
    UnitKind("zoo-finetune", 2, "a zoo model's fine-tune at the chosen setting"),
    UnitKind("text-embedding", 2, "the text-datasets recipe's frozen word-embedding table over "
             "the shared vocabulary of its text files (tensors)"),
    UnitKind("text-model", 2, "a text classifier trained on one text dataset's training split "
             "(safetensors)"),
    UnitKind("text-selection", 2, "a text source's estimator and feature-space adversarial "
             "scores for one target dataset"),
    UnitKind("text-snapped", 2, "one text model's snapped word-substitution attack on a target "
             "dataset's test texts (tensors: adversarial ids, changed tokens, success)"),
    UnitKind("text-snapped-adversarial", 2, "alpha1/alpha2/combined of a text source against "
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


def canonical(config: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) of a configuration; a :class:`UnitConfig`
    is written as :meth:`UnitConfig.as_dict`."""
    from advtransfer.fileio import to_jsonable

    if isinstance(config, UnitConfig):
        config = config.as_dict()
    return json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))


def seed_for(*parts: Any) -> int:
    """A seed derived from identities, not from a global RNG stream: the first 32 bits of
    sha256 over the canonical JSON of ``parts`` (so two dict orders give one seed)."""
    return int(hashlib.sha256(canonical(list(parts)).encode()).hexdigest()[:8], 16)


def unit_key(kind: str, config: Any) -> str:
    """``kind-<16 hex digits>``: the identity of a unit of work, from its kind, the kind's
    version (bumped whenever the kind's computation changes, which a test of recorded code
    fingerprints enforces) and its whole configuration, which holds the keys of the units it is
    built on (so a new version of a kind recomputes its dependants too). An undeclared kind is an
    :class:`AdvTransferError`; a package kind's configuration must be its :class:`UnitConfig`
    (:data:`CONFIGS`)."""
    check_config(kind, config)
    return _hashed(kind, f"{kind}:v{get_kind(kind).version}:{canonical(config)}")


def identity_key(name: str, identity: Any) -> str:
    """``name-<16 hex digits>``: a key for something that is not a stored unit (a reference
    read from a file, an ensemble of stored references), from the canonical JSON of what
    identifies it; it stands where a unit's key would (the reference of an attack)."""
    return _hashed(name, canonical(identity))


def _hashed(name: str, text: str) -> str:
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


#: The typed configuration of each kind that declares one (every package kind), by kind name.
CONFIGS: dict[str, type[UnitConfig]] = {}


def check_config(kind: str, config: Any) -> None:
    """Refuse a configuration that is not the declared :class:`UnitConfig` of ``kind`` (a kind
    without one, such as a test's, takes any JSON value)."""
    get_kind(kind)
    wanted = CONFIGS.get(kind)
    if wanted is None and kind in PACKAGE_KINDS:
        wanted = UnitConfig  # its class is declared in a module not imported yet
    if wanted is not None and not isinstance(config, wanted):
        raise AdvTransferTypeError(f"a {kind!r} unit is configured by {wanted.__name__}; got "
                                   f"{type(config).__name__}")
    if isinstance(config, UnitConfig) and config.kind != kind:
        raise AdvTransferTypeError(f"{type(config).__name__} configures {config.kind!r} units, "
                                   f"not {kind!r}")


@dataclass(frozen=True, kw_only=True)
class UnitConfig:
    """The typed, frozen configuration of one unit of work; a subclass per kind, declared as
    ``class TransferUnit(UnitConfig, kind="transfer")`` and decorated with
    ``@dataclass(frozen=True, kw_only=True)``.

    Its **key** (:attr:`key`) is derived from the kind, the kind's version and *every* field,
    defaults included (:meth:`as_dict`): nothing is picked by hand, so no setting that changes
    the result can be left out of it. Fields naming other units hold their keys. Its **seed**
    (:attr:`seed`) derives from the key, so a resumed run draws exactly the numbers an
    uninterrupted one would (``docs/design.md §4``). Fields may not be named ``key``,
    ``seed``, ``seed_for``, ``kind`` or ``as_dict`` (a recipe's seed is a field such as
    ``data_seed``)."""

    kind: ClassVar[str]

    def __init_subclass__(cls, *, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        taken = sorted({"key", "seed", "seed_for", "kind", "as_dict"}
                       & set(cls.__dict__.get("__annotations__", {})))
        if taken:
            raise AdvTransferError(f"{cls.__qualname__}: {taken} name UnitConfig's own "
                                   "attributes; give the fields other names (e.g. data_seed)")
        if kind is None:
            return
        get_kind(kind)
        old = CONFIGS.get(kind)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise AdvTransferError(f"unit kind {kind!r} already has its configuration "
                                   f"{old.__module__}.{old.__qualname__}")
        cls.kind = kind
        CONFIGS[kind] = cls

    def as_dict(self) -> dict[str, Any]:
        """Every field by name, as JSON values (nested dataclasses as dicts, tuples as lists)."""
        from advtransfer.fileio import to_jsonable

        return {f.name: to_jsonable(_plain(getattr(self, f.name)))
                for f in dataclasses.fields(self)}

    @property
    def key(self) -> str:
        """The unit's key (:func:`unit_key`): ``kind-<16 hex digits>``."""
        return unit_key(self.kind, self)

    @property
    def seed(self) -> int:
        """The unit's seed: :func:`seed_for` of what its key is made of but the kind's version
        (kind and every field), so a new version of the kind draws the same random numbers and
        its results differ from the old ones by the code change alone."""
        return seed_for(self.kind, self.as_dict())

    def seed_for(self, purpose: str) -> int:
        """A second seed of the unit, for another draw than :attr:`seed` (``purpose`` names it:
        a data split, a perturbation)."""
        return seed_for(self.kind, self.as_dict(), purpose)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


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
def _config_class_names() -> dict[str, frozenset[str]]:
    """kind -> the names of the classes declared ``class X(..., kind="KIND")`` in the package
    (found in the syntax trees, nothing imported)."""
    found: dict[str, set[str]] = {}
    for module in _modules():
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.ClassDef):
                for kw in node.keywords:
                    if kw.arg == "kind" and isinstance(kw.value, ast.Constant):
                        found.setdefault(str(kw.value.value), set()).add(node.name)
    return {k: frozenset(v) for k, v in found.items()}


def _refers(node: ast.AST, names: frozenset[str]) -> bool:
    return any((isinstance(n, ast.Name) and n.id in names)
               or (isinstance(n, ast.Attribute) and n.attr in names)
               or (isinstance(n, ast.alias) and n.name.rsplit(".", 1)[-1] in names)
               for n in ast.walk(node))


@functools.cache
def _builders(kind: str) -> frozenset[str]:
    """The names that build units of ``kind``: its configuration classes and the public
    module-level functions that refer to them (a stage such as ``stages.transfer``, whose
    callers prepare the unit's data)."""
    classes = _config_class_names().get(kind, frozenset())
    names = set(classes)
    if classes:
        for module in _modules():
            names.update(node.name for node in _tree(module).body
                          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                          and not node.name.startswith("_") and _refers(node, classes))
    return frozenset(names)


def _uses_config_of(name: str, kind: str) -> bool:
    """Whether module ``name`` builds units of ``kind`` (:func:`_builders`)."""
    builders = _builders(kind)
    return bool(builders) and _refers(_tree(name), builders)


@functools.cache
def code_modules(kind: str) -> tuple[str, ...]:
    """The modules whose code a unit of ``kind`` depends on (see the module docs), sorted."""
    declared = get_kind(kind)
    todo = [m for m in _modules() if _names_string(m, kind) or _uses_config_of(m, kind)]
    todo += list(declared.modules)
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
