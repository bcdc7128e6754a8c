"""Recipe configurations: TOML files and ``key=value`` overrides, checked against the dataclass.

A configuration file is TOML with a ``recipe = "NAME"`` line and any of the recipe's fields::

    recipe = "digits-distribution"
    epochs = 20
    shares = [0.0, 0.5, 1.0]

Unknown keys are errors that list the keys that exist; values must match the field's type
(an int is accepted for a float field).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

from advtransfer.errors import AdvTransferError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and minimally converted) against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except AdvTransferError as exc:
                errors.append(str(exc))
        raise AdvTransferError(f"{key} must be {_type_name(tp)}; got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise AdvTransferError(f"{key} must be one of {list(args)}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise AdvTransferError(f"{key} must be a list; got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise AdvTransferError(f"{key} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AdvTransferError(f"{key} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AdvTransferError(f"{key} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise AdvTransferError(f"{key} must be a string; got {value!r}")
        return value
    return value


def apply(config: Any, values: dict[str, Any], *, source: str) -> Any:
    """A copy of ``config`` with ``values`` applied, each checked against its field's type."""
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    unknown = [k for k in values if k not in names]
    if unknown:
        import difflib

        close = [f"{k!r} -> {m[0]!r}" for k in unknown
                 if (m := difflib.get_close_matches(k, names, n=1))]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise AdvTransferError(f"{source}: unknown configuration key(s) {unknown}.{hint} The "
                               f"keys of {type(config).__name__} are {names} (`advtransfer "
                               "list RECIPE` shows them with their defaults)")
    checked = {k: coerce(v, hints[k], f"{source}: {k}") for k, v in values.items()}
    return dataclasses.replace(config, **checked)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with value parsed as a TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``,
    ``"s"``); a bare word is a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AdvTransferError(f"--set expects key=value; got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AdvTransferError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise AdvTransferError(f"{path} is not valid TOML: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
