"""The recipe registry and the context a recipe runs in.

A recipe is a typed configuration (a dataclass whose fields all have defaults, loadable from
TOML and overridable from the CLI) plus a run function built from stages that go through the
results store, so every finished unit of work is reused by a rerun.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advtransfer.errors import AdvTransferError
from advtransfer.executors import Executor, LocalExecutor
from advtransfer.progress import track
from advtransfer.store import Store
from advtransfer.units import seed_for


@dataclass
class RunContext:
    """What a running recipe gets besides its configuration."""

    store: Store
    device: torch.device
    progress: bool
    #: where the recipe's independent units run (:mod:`advtransfer.executors`): the
    #: model-selection recipes hand it their per-candidate units, the paper recipes their
    #: per-source work (:meth:`map`)
    executor: Executor = dataclasses.field(default_factory=LocalExecutor)

    def map(self, fn: Callable[[Any, RunContext], Any], items: Sequence[Any], *,
            description: str = "sources") -> list[Any]:
        """``[fn(item, ctx) for item in items]``, each call run by :attr:`executor`. In this
        process ``ctx`` is this context; elsewhere (a Ray worker) it is a context on the same
        run directory (which must be on a file system the worker sees), without the run lock,
        which this process holds, and without progress output; the units a worker computed or
        reused count in this run's totals. ``fn`` and ``items`` must be picklable (Ray uses
        cloudpickle: closures are fine) and the units ``fn`` reads must not be computed by two
        items at once (compute shared units, such as a reference's attack, before). When
        the items run elsewhere, the run directory is created here first (with ``run.json``
        and this process's run lock), since the workers write their units into it."""
        if isinstance(self.executor, LocalExecutor):
            return [fn(item, self) for item in track(list(items), description=description,
                                                     enabled=self.progress)]
        self.store.prepare()
        out = self.executor.map(_in_worker, list(items), shared={
            "fn": fn, "root": str(self.store.root), "device": str(self.device)},
            description=description, progress=self.progress)
        for _, units in out:
            self.store.adopt(units)
        return [result for result, _ in out]

    def seed_for(self, *parts: Any) -> int:
        """A seed derived from identities (:func:`advtransfer.units.seed_for`), not from a
        global RNG stream, so a resumed run draws exactly the numbers an uninterrupted run
        would. A unit's own seed is :attr:`advtransfer.units.UnitConfig.seed`."""
        return seed_for(*parts)


def _in_worker(item: Any, *, fn: Callable[[Any, RunContext], Any], root: str,
               device: str) -> tuple[Any, dict[str, str]]:
    """One item of :meth:`RunContext.map` in another process: a context on the run
    directory ``root``, and the units it used (relative path -> "computed" / "reused")."""
    store = Store(root)
    result = fn(item, RunContext(store=store, device=torch.device(device), progress=False))
    return result, store.units


@dataclass(frozen=True)
class Recipe:
    name: str
    config: type
    run: Callable[[Any, RunContext], dict]
    description: str
    quick: Callable[[Any], Any] | None = None  # the --quick reduction of a configuration
    #: Checks a configuration's values without running anything (raises AdvTransferError):
    #: called before the run, so that a bad value is a usage error (CLI exit 2).
    check: Callable[[Any], None] | None = None
    #: Configuration fields (lists of candidates) a finished run may be extended by: rerun
    #: into the same directory with entries added and only their units are computed.
    growable: tuple[str, ...] = ()


REGISTRY: dict[str, Recipe] = {}


def register(name: str, config: type, description: str,
             quick: Callable[[Any], Any] | None = None,
             check: Callable[[Any], None] | None = None,
             growable: tuple[str, ...] = ()) -> Callable:
    """Decorator registering ``run(config, ctx) -> results`` as recipe ``name``; ``check``
    validates a configuration before the run, ``growable`` names the candidate lists a run
    may be extended by (see :class:`Recipe`)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError("a recipe configuration must be a dataclass")

    def wrap(run: Callable[[Any, RunContext], dict]) -> Callable[[Any, RunContext], dict]:
        REGISTRY[name] = Recipe(name, config, run, description, quick, check, growable)
        return run

    return wrap


def get_recipe(name: str) -> Recipe:
    if name not in REGISTRY:
        _load_builtin_recipes(name)
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise AdvTransferError(f"unknown recipe {name!r}; recipes are {sorted(REGISTRY)}.{hint} "
                               "(or pass a CONFIG.toml path)")
    return REGISTRY[name]


def all_recipes() -> list[Recipe]:
    _load_builtin_recipes()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def _load_builtin_recipes(name: str | None = None) -> None:
    from advtransfer.experiments.recipes import load

    load(name)
