"""Safe checkpoint input/output.

* :func:`save_model` writes a ``.safetensors`` file atomically (temporary file in the same
  directory, ``fsync``, :func:`os.replace`), optionally recording how to rebuild the model.
* :func:`load_state` reads ``.safetensors`` with :func:`safetensors.torch.load_file` and
  ``.pt`` / ``.pth`` / ``.bin`` with ``torch.load(..., weights_only=True)``: arbitrary pickled
  objects are refused, never unpickled.
* :func:`load_into` loads a state dict into a model, reporting missing / unexpected keys and shape
  mismatches in one clear error.
* :func:`load_factory` / :func:`load_model` build a model from ``"package.module:factory"`` or a
  name in :data:`advtransfer.models.architectures.ARCHITECTURES` and load weights into it.

Metadata keys written by :func:`save_model` (all values are strings, as safetensors requires):
``"format": "pt"``, ``"advtransfer_version"``, and when given ``"architecture"`` (a spec for
:func:`load_model`) and ``"kwargs"`` (JSON object of the builder's keyword arguments).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import json
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from advtransfer._version import __version__
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.fileio import atomic_write_with
from advtransfer.models.architectures import ARCHITECTURES, build

__all__ = [
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIX",
    "load_factory",
    "load_into",
    "load_model",
    "load_state",
    "read_metadata",
    "save_model",
]

SAFETENSORS_SUFFIX = ".safetensors"
#: Suffixes read with ``torch.load(..., weights_only=True)``.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
#: Keys under which training scripts commonly nest the state dict; unwrapped by load_state.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
_MAX_LISTED = 10


def _as_path(path: str | os.PathLike[str], name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise AdvTransferTypeError(
            f"{name} must be a str or os.PathLike, got {type(path).__name__}"
        )
    return Path(path)


def _state_tensors(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-independent copies of the model's state-dict tensors."""
    if isinstance(model, nn.Module):
        state: Mapping[str, Any] = model.state_dict()
    elif isinstance(model, Mapping):
        state = model
    else:
        raise AdvTransferTypeError(
            f"model must be an nn.Module or a mapping str -> Tensor, got {type(model).__name__}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise AdvTransferTypeError(
                f"state dict entries must be str -> Tensor, got {key!r} -> {type(value).__name__}"
            )
        # clone(): safetensors refuses tensors that share storage (e.g. tied weights).
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors


def _fsync_directory(directory: Path) -> None:
    """Persist the directory entry after a rename (POSIX; a no-op where unsupported)."""
    if os.name != "posix":  # pragma: no cover
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_model(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model.state_dict()`` (or a state dict) to a ``.safetensors`` file atomically.

    The tensors are written to a temporary file in the destination directory, flushed with
    ``fsync`` and moved over ``path`` with :func:`os.replace`, so ``path`` either keeps its old
    content or has the complete new one, even if writing fails midway.

    Args:
        model: the module (its ``state_dict()`` is saved) or a mapping ``str -> Tensor``.
        path: destination; must end in ``.safetensors``. Parent directories are created.
        architecture: optional spec for :func:`load_model` (an ``ARCHITECTURES`` name or
            ``"package.module:factory"``), stored as metadata ``"architecture"``.
        kwargs: optional JSON-serialisable keyword arguments of the builder, stored as JSON
            metadata ``"kwargs"`` (tuples become lists).
        metadata: extra ``str -> str`` metadata.

    Returns:
        The destination path.
    """
    path = _as_path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise AdvTransferError(
            f"path must end in {SAFETENSORS_SUFFIX!r} (save_model writes safetensors), got {path}"
        )
    info: dict[str, str] = {"format": "pt", "advtransfer_version": __version__}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise AdvTransferTypeError("metadata must be a mapping str -> str")
        info.update(metadata)
    if architecture is not None:
        if not isinstance(architecture, str) or not architecture:
            raise AdvTransferTypeError(
                f"architecture must be a non-empty str, got {architecture!r}"
            )
        info["architecture"] = architecture
    if kwargs is not None:
        if not isinstance(kwargs, Mapping):
            raise AdvTransferTypeError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
        try:
            info["kwargs"] = json.dumps(dict(kwargs), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise AdvTransferError(f"kwargs must be JSON-serialisable: {exc}") from None
    tensors = _state_tensors(model)

    atomic_write_with(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp),
                                                                   metadata=info))
    _fsync_directory(path.parent)
    return path


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AdvTransferError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise AdvTransferError(f"checkpoint path is not a file: {path}")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the string metadata of a ``.safetensors`` file (``{}`` if it has none)."""
    path = _as_path(path)
    _check_file(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise AdvTransferError(f"metadata is only available for {SAFETENSORS_SUFFIX} files: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise AdvTransferError(f"cannot read safetensors file {path}: {exc}") from exc


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unpickling_reason(exc: BaseException) -> str:
    """What a ``torch.load(..., weights_only=True)`` refusal found (e.g. ``it references
    mypkg.Net``), without torch's advice to disable the check."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it references {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. Please|\n|$)", text)
    return found.group(1).strip() if found else "a pickled object"


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (``str -> Tensor``, on CPU) from a checkpoint file.

    ``.safetensors`` files are read with :func:`safetensors.torch.load_file`; ``.pt``, ``.pth``
    and ``.bin`` with ``torch.load(path, map_location="cpu", weights_only=True)``, which refuses
    any pickled object other than tensors and plain containers. A pickle whose top level is a
    dict holding the state dict under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` is
    unwrapped.

    Raises:
        AdvTransferError: missing file, unknown suffix, unreadable file, a pickle with
            non-tensor objects, or content that is not a ``str -> Tensor`` mapping.
    """
    path = _as_path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        try:
            return dict(safetensors.torch.load_file(str(path), device="cpu"))
        except Exception as exc:
            raise AdvTransferError(f"cannot read safetensors file {path}: {exc}") from exc
    if suffix not in PICKLE_SUFFIXES:
        raise AdvTransferError(
            f"unsupported checkpoint suffix {path.suffix!r} for {path}; accepted: "
            f"{', '.join((SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES))}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AdvTransferError(
            f"refused to load {path}: it contains objects other than tensors and plain "
            f"containers ({unpickling_reason(exc)}), and unpickling them could execute "
            "arbitrary code. Re-save only the state dict (e.g. as .safetensors with "
            "advtransfer.models.checkpoint.save_model)."
        ) from None
    except Exception as exc:
        raise AdvTransferError(f"cannot read checkpoint {path}: {exc}") from exc
    if not _is_tensor_dict(obj) and isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and _is_tensor_dict(obj[key]):
                obj = obj[key]
                break
    if not _is_tensor_dict(obj):
        raise AdvTransferError(
            f"checkpoint {path} does not hold a state dict (a mapping str -> Tensor, possibly "
            f"nested under one of {', '.join(_NESTED_KEYS)}); got {type(obj).__name__}"
        )
    return dict(obj)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}): {shown}{more}"


def load_into(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Load the weights in ``path`` (see :func:`load_state`) into ``model`` in place.

    With ``strict=True`` the file's keys must match ``model.state_dict()`` exactly; with
    ``strict=False`` missing and unexpected keys are allowed (a :class:`UserWarning` lists
    them). Shape mismatches are always an error.

    Returns:
        ``model`` (for chaining).

    Raises:
        AdvTransferError: listing missing keys, unexpected keys and shape mismatches.
    """
    if not isinstance(model, nn.Module):
        raise AdvTransferTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    state = load_state(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if strict and missing:
        problems.append(_listing("missing keys", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if problems:
        hint = "" if not strict or mismatched else (
            " (in Python, strict=False loads the matching keys and warns about the rest)")
        raise AdvTransferError(
            f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(problems) + hint
        )
    if missing or unexpected:
        parts = [
            _listing(title, keys)
            for title, keys in (("missing keys", missing), ("unexpected keys", unexpected))
            if keys
        ]
        warnings.warn(
            f"loading {path} with strict=False: " + "; ".join(parts), UserWarning, stacklevel=2
        )
    model.load_state_dict(state, strict=strict)
    return model


def _import_like_python_m(module_name: str) -> Any:
    """Import ``module_name`` with the current directory first on ``sys.path``, as
    ``python -m`` puts it there (a console script does not); ``sys.path`` is restored after."""
    here = os.getcwd()
    if here in sys.path or "" in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, here)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(here)


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """Resolve ``"package.module:factory"`` to a callable returning an :class:`nn.Module`.

    The module is imported with the current directory first on the import path, as
    ``python -m`` does (so ``mypkg/`` in the working directory needs no ``PYTHONPATH``).
    ``factory`` may be a dotted attribute path (``"pkg.mod:Class.build"``). The returned callable
    forwards its arguments to the factory and raises :class:`AdvTransferTypeError` if the result
    is not an ``nn.Module``.

    Raises:
        AdvTransferError: bad format, module not importable, attribute missing or not callable.
    """
    if not isinstance(spec, str):
        raise AdvTransferTypeError(f"spec must be a str, got {type(spec).__name__}")
    module_name, sep, attr_path = spec.partition(":")
    parts = attr_path.split(".")
    if (
        not sep
        or not module_name
        or ":" in attr_path
        or not all(p.isidentifier() for p in parts)
        or not all(p.isidentifier() for p in module_name.split("."))
    ):
        raise AdvTransferError(
            f"spec must have the form 'package.module:factory' (e.g. "
            f"'advtransfer.models.architectures:lenet'), got {spec!r}"
        )
    try:
        module = _import_like_python_m(module_name)
    except ImportError as exc:
        raise AdvTransferError(
            f"cannot import module {module_name!r} from spec {spec!r}: {exc}"
        ) from exc
    factory: Any = module
    for i, part in enumerate(parts):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            owner = ".".join([module_name, *parts[:i]])
            raise AdvTransferError(f"{owner!r} has no attribute {part!r} (spec {spec!r})") from None
    if not callable(factory):
        raise AdvTransferTypeError(
            f"{spec!r} is not callable (it is a {type(factory).__name__}); the spec must name a "
            "function or class returning an nn.Module"
        )

    @functools.wraps(factory)
    def checked(*args: Any, **kwargs: Any) -> nn.Module:
        model = factory(*args, **kwargs)
        if not isinstance(model, nn.Module):
            raise AdvTransferTypeError(
                f"factory {spec!r} must return an nn.Module, returned {type(model).__name__}"
            )
        return model

    return checked


def load_model(
    spec: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    **factory_kwargs: Any,
) -> nn.Module:
    """Build a model and optionally load weights into it (strictly).

    Args:
        spec: ``"package.module:factory"`` (see :func:`load_factory`) or a name in
            :data:`~advtransfer.models.architectures.ARCHITECTURES` (e.g. ``"resnet18"``, the
            CIFAR ResNet-18 — not torchvision's; use :func:`advtransfer.models.zoo.from_name`
            for those). ``None``: read ``architecture`` and ``kwargs`` from the metadata of the
            ``.safetensors`` file ``weights`` written by :func:`save_model`.
        weights: checkpoint to load (see :func:`load_state`); ``None`` keeps the factory's
            initialisation.
        **factory_kwargs: keyword arguments for the factory; with ``spec=None`` they override
            the stored ``kwargs``.

    Returns:
        The model (in the mode the factory left it, normally training mode).
    """
    if spec is None:
        if weights is None:
            raise AdvTransferError(
                "load_model needs spec (an architecture name or 'package.module:factory') or "
                "weights (a .safetensors file written by save_model with architecture=...)"
            )
        meta = read_metadata(weights)
        if "architecture" not in meta:
            raise AdvTransferError(
                f"{weights} has no 'architecture' metadata; pass spec explicitly (or save with "
                "save_model(..., architecture=..., kwargs=...))"
            )
        spec = meta["architecture"]
        try:
            stored = json.loads(meta.get("kwargs", "{}"))
        except json.JSONDecodeError as exc:
            raise AdvTransferError(f"{weights} has invalid 'kwargs' metadata: {exc}") from None
        if not isinstance(stored, dict):
            raise AdvTransferError(f"{weights} has 'kwargs' metadata that is not a JSON object")
        factory_kwargs = {**stored, **factory_kwargs}
    if not isinstance(spec, str):
        raise AdvTransferTypeError(f"spec must be a str, got {type(spec).__name__}")
    if ":" in spec:
        model = load_factory(spec)(**factory_kwargs)
    elif spec in ARCHITECTURES:
        model = build(spec, **factory_kwargs)
    else:
        close = difflib.get_close_matches(spec, list(ARCHITECTURES), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise AdvTransferError(
            f"spec {spec!r} is neither an architecture name nor 'package.module:factory'.{hint} "
            f"Architecture names: {', '.join(sorted(ARCHITECTURES))}"
        )
    if weights is not None:
        load_into(model, weights, strict=True)
    return model
