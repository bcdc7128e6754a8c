"""How a report writes single values: table cells, p-values, correlations with their
intervals, durations, file-name slugs and CSV cells (missing values as an em dash in tables,
empty in CSV)."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from advtransfer.fileio import to_jsonable

_DASH = "—"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def _num(v: Any) -> float:
    return float(v) if _finite(v) else math.nan


def _fmt_value(v: Any) -> str:
    """A table cell: numbers to 4 significant digits, missing values as an em dash."""
    if v is None:
        return _DASH
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if _is_number(v):
        f = float(v)
        if math.isnan(f):
            return _DASH
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        return f"{f:.4g}"
    if isinstance(v, (Mapping, list, tuple)):
        text = json.dumps(to_jsonable(v), separators=(",", ":"))
        return text if len(text) <= 40 else text[:39] + "…"
    return str(v)


def _fmt_p(p: Any) -> str:
    """A p-value: 2 significant digits, floored at ``< 0.001`` (tests do not resolve less)."""
    if not _finite(p):
        return "n/a"
    p = float(p)
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def _fmt_r(r: Any) -> str:
    return f"{float(r):.2f}" if _finite(r) else "n/a"


def _fmt_r_ci(row: Mapping[str, Any], stat: str, lo: str, hi: str) -> str:
    if not _finite(row.get(stat)):
        return _DASH
    text = f"{float(row[stat]):.3f}"
    if _finite(row.get(lo)) and _finite(row.get(hi)):
        text += f" [{float(row[lo]):.3f}, {float(row[hi]):.3f}]"
    else:
        text += " [—]"
    return text


def _fmt_seconds(s: float) -> str:
    total = float(s)
    if total < 60:
        return f"{total:.1f} s"
    minutes, sec = divmod(round(total), 60)
    hours, minutes = divmod(minutes, 60)
    parts = ([f"{hours} h"] if hours else []) + [f"{minutes} min", f"{sec} s"]
    return f"{total:.1f} s ({' '.join(parts)})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "figure"


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(to_jsonable(v))
    if _is_number(v) and not isinstance(v, numbers.Integral):
        return repr(float(v))
    return str(v)


def _spearman_p(row: Mapping[str, Any]) -> Any:
    """The exact permutation p-value when the row has one (small n), else scipy's."""
    exact = row.get("spearman_p_exact")
    return exact if _finite(exact) else row.get("spearman_p")


def _p_eq(p: Any) -> str:
    text = _fmt_p(p)
    return text if text.startswith("<") else f"= {text}"
