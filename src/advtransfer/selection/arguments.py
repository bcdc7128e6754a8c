"""The checks of :func:`advtransfer.selection.rank`'s arguments (methods, numeric settings,
source accuracies); each error names the parameter and the accepted values."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.methods import DEFAULT_METHODS, DEPRECATED_METHODS, METHODS


def _check_methods(methods: Any, with_source_accuracy: bool) -> tuple[str, ...]:
    if methods is None:
        return DEFAULT_METHODS + (("source_accuracy",) if with_source_accuracy else ())
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, Iterable):
        raise AdvTransferTypeError(f"methods must be a list of method names; got "
                                   f"{type(methods).__name__}")
    methods = tuple(methods)
    if not methods:
        raise AdvTransferError(f"methods is empty; choose from {list(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AdvTransferError(f"methods has unknown name(s) {unknown}; known methods are "
                               f"{list(METHODS)}")
    dups = sorted({m for m in methods if methods.count(m) > 1})
    if dups:
        raise AdvTransferError(f"methods lists {dups} more than once")
    for old, new in DEPRECATED_METHODS.items():
        if old in methods:
            warnings.warn(f"method {old!r} is now called {new!r} (a linear head fitted on the "
                          f"penultimate features); {old!r} will be removed", DeprecationWarning,
                          stacklevel=3)
            if new in methods:
                raise AdvTransferError(f"methods lists {old!r} and {new!r}, one method")
            methods = tuple(new if m == old else m for m in methods)
    return methods


def _check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "an integer >= 1" + (" or None" if allow_none else "")
        raise AdvTransferError(f"{name} must be {what}; got {value!r}")
    return value


def _check_source_accuracy(source_accuracy: Any, names: Sequence[str]) -> dict[str, float]:
    if not isinstance(source_accuracy, Mapping):
        raise AdvTransferTypeError("source_accuracy must be a mapping candidate name -> "
                                   f"accuracy; got {type(source_accuracy).__name__}")
    missing = [n for n in names if n not in source_accuracy]
    extra = [str(k) for k in source_accuracy if k not in names]
    if missing or extra:
        raise AdvTransferError(f"source_accuracy must name exactly the candidates {list(names)}; "
                               f"missing {missing}, unknown {extra}")
    out = {}
    for n in names:
        v = source_accuracy[n]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(v)):
            raise AdvTransferError(f"source_accuracy[{n!r}] must be a finite number; got {v!r}")
        out[n] = float(v)
    return out



def _check_settings(methods: tuple[str, ...], source_accuracy: Any, attack_samples: Any,
                    batch_size: Any, finetune_epochs: Any, seed: Any,
                    finetune_test_fraction: Any) -> int | None:
    """The checks of :func:`advtransfer.selection.rank`'s settings, in this order: the
    ``source_accuracy`` method needs ``source_accuracy=``; ``attack_samples`` is an integer
    >= 1 or None, ``batch_size`` and ``finetune_epochs`` integers >= 1, ``seed`` an integer and
    ``finetune_test_fraction`` in (0, 1). Returns ``attack_samples``."""
    if "source_accuracy" in methods and source_accuracy is None:
        raise AdvTransferError("method 'source_accuracy' needs source_accuracy= (each "
                               "candidate's accuracy on its own source task)")
    attack_samples = _check_positive_int(attack_samples, "attack_samples", allow_none=True)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(finetune_epochs, "finetune_epochs")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdvTransferTypeError(f"seed must be an integer; got {seed!r}")
    if not (isinstance(finetune_test_fraction, (int, float)) and 0 < finetune_test_fraction < 1):
        raise AdvTransferError(f"finetune_test_fraction must lie in (0, 1); got "
                               f"{finetune_test_fraction!r}")
    return attack_samples
