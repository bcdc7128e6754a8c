"""The recipe registry and the context a recipe runs in.

A recipe is a typed configuration (a dataclass whose fields all have defaults, loadable from
TOML and overridable from the CLI) plus a run function built from stages that go through the
results store, so every finished unit of work is reused by a rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from advtransfer.errors import AdvTransferError
from advtransfer.executors import Executor, LocalExecutor
from advtransfer.store import Store


@dataclass
class RunContext:
    """What a running recipe gets besides its configuration."""

    store: Store
    device: torch.device
    progress: bool
    #: where the recipe's independent units run (:mod:`advtransfer.executors`); the
    #: model-selection recipes hand their per-candidate units to it
    executor: Executor = dataclasses.field(default_factory=LocalExecutor)

    def seed_for(self, *parts: Any) -> int:
        """A seed derived from a unit's identity (not from a global RNG stream), so a resumed
        run draws exactly the numbers an uninterrupted run would."""
        digest = hashlib.sha256(repr(parts).encode()).hexdigest()
        return int(digest[:8], 16)


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
