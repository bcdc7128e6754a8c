"""The candidates of :func:`advtransfer.selection.rank`: what a candidate may be (a model, a
spec, a ``(spec, weights)`` pair or a function building the model), the checks of a pool (names
-> candidates, not loaded), and building one candidate inside its unit of work."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError

__all__ = ["Candidate", "load_candidate"]


def load_candidate(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """``advtransfer.models.create(spec, weights)``: a candidate model from a spec (kept for
    backward compatibility; see :func:`advtransfer.models.registry.create` for the specs, e.g.
    ``"builtin:digits-cnn"``, ``"cifar:resnet18"``, ``"tv:resnet50"``, ``"timm:NAME"``,
    ``"package.module:factory"``). Returns the model in eval mode."""
    from advtransfer.models.registry import create

    return create(spec, weights)


Candidate = nn.Module | str | tuple[str, Any] | Callable[[], nn.Module]
"""A candidate: a model, a spec ``"SPEC"`` / ``"SPEC=WEIGHTS"``, a pair ``(spec, weights)``, or
a zero-argument function that builds the model (called inside the candidate's unit of work,
so only one such model is in memory at a time)."""


def _candidate_sources(candidates: Any) -> dict[str, Candidate]:
    """Names -> candidates, checked but not loaded (specs and builders are loaded inside each
    candidate's unit, one at a time)."""
    if isinstance(candidates, nn.Module) or isinstance(candidates, (str, bytes)):
        raise AdvTransferTypeError("candidates must be a mapping name -> model (or spec) or a "
                                   "list of specs/models; got a single "
                                   f"{type(candidates).__name__}")
    if isinstance(candidates, Mapping):
        items = [(str(k), v) for k, v in candidates.items()]
    elif isinstance(candidates, Iterable):
        items = []
        for i, item in enumerate(candidates):
            if isinstance(item, str):
                items.append((item, item))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                items.append((str(item[0]), tuple(item)))
            elif isinstance(item, nn.Module) or callable(item):
                items.append((f"model_{i}", item))
            else:
                raise AdvTransferTypeError(
                    f"candidates[{i}] must be an nn.Module, a spec string ('SPEC' or "
                    f"'SPEC=WEIGHTS'), a pair (spec, weights) or a function building the "
                    f"model; got {type(item).__name__}")
    else:
        raise AdvTransferTypeError(f"candidates must be a mapping or a list; got "
                                   f"{type(candidates).__name__}")
    if not items:
        raise AdvTransferError("candidates is empty; pass at least one candidate model")
    out: dict[str, Candidate] = {}
    for name, value in items:
        if name in out:
            raise AdvTransferError(f"candidates has the name {name!r} twice; names must be "
                                   "unique")
        if isinstance(value, list):
            value = tuple(value)
        if not (isinstance(value, (nn.Module, str)) or callable(value)
                or (isinstance(value, tuple) and len(value) == 2)):
            raise AdvTransferTypeError(f"candidates[{name!r}] must be an nn.Module, a spec "
                                       f"string or a function building the model; got "
                                       f"{type(value).__name__}")
        out[name] = value
    return out


def _build_candidate(value: Candidate, name: str) -> tuple[nn.Module, bool]:
    """The candidate's model, and whether it was built here (and so may be moved)."""
    if isinstance(value, nn.Module):
        return value, False
    if isinstance(value, str):
        spec, _, weights = value.partition("=")
        return load_candidate(spec, weights or None), True
    if isinstance(value, tuple):
        return load_candidate(value[0], value[1]), True
    model = value()
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"the builder of candidate {name!r} must return an "
                                   f"nn.Module; got {type(model).__name__}")
    return model.eval(), True
