"""What a report is asked to show: :func:`_parse` checks a run's results dictionary (the
content of ``results.json``) and returns a :class:`_Spec`; every malformed field is an
:class:`~advtransfer.errors.AdvTransferError` naming it, raised before anything is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advtransfer.errors import AdvTransferError
from advtransfer.report.formatting import _is_number


@dataclass(frozen=True)
class _Spec:
    title: str
    description: str
    metrics: list[str]
    outcomes: list[str]
    sweep: str | None
    groups: str | None
    labels: dict[str, str]
    columns: list[str] | None
    records: list[Mapping[str, Any]]
    matrices: dict[str, tuple[list[str], list[list[Any]]]]
    #: per matrix, what its rows and its columns are (``results['matrices'][name]['rows']``,
    #: ``['columns']``); a matrix without them has attackers as rows and victims as columns
    matrix_axes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def label(self, key: str) -> str:
        return self.labels.get(key, key)


def _str_list(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(k, str) for k in value):
        raise AdvTransferError(f"{name} must be a list of strings, got {value!r}")
    return list(dict.fromkeys(value))


def _parse(results: Any) -> _Spec:
    """``results`` checked, in this order: the records, ``results['report']`` and its fields
    (:func:`_parse_report`), that every key the report names is a record key (when there are
    records), then the matrices (:func:`_parse_matrices`)."""
    if not isinstance(results, Mapping):
        raise AdvTransferError(f"results must be a dict, got {type(results).__name__}")
    records = results.get("records")
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)) or not all(
            isinstance(r, Mapping) for r in records):
        raise AdvTransferError("results['records'] must be a list of dicts (one per source model)")
    fields = _parse_report(results.get("report"))
    if records:
        _check_record_keys(records, fields)
    raw = results.get("matrices") or {}
    matrices = _parse_matrices(raw)
    return _Spec(**fields, records=list(records), matrices=matrices,
                 matrix_axes=_matrix_axes(raw))


def _matrix_axes(raw: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The matrices that name their rows and columns (both strings, or neither)."""
    axes: dict[str, tuple[str, str]] = {}
    for mname, m in raw.items():
        rows, columns = m.get("rows"), m.get("columns")
        if rows is None and columns is None:
            continue
        if not (isinstance(rows, str) and isinstance(columns, str)):
            raise AdvTransferError(f"results['matrices'][{mname!r}] must give 'rows' and "
                                   f"'columns' as strings together, got {rows!r}, {columns!r}")
        axes[str(mname)] = (rows, columns)
    return axes


def _parse_report(report: Any) -> dict[str, Any]:
    """The fields of ``results['report']`` that :class:`_Spec` holds (all but the records and
    the matrices), each checked."""
    if not isinstance(report, Mapping):
        raise AdvTransferError(
            "results['report'] must be a dict with 'title', 'metrics' and 'outcomes'")
    title = report.get("title")
    if not isinstance(title, str) or not title.strip():
        raise AdvTransferError(f"results['report']['title'] must be a non-empty string, "
                               f"got {title!r}")
    description = report.get("description") or ""
    if not isinstance(description, str):
        raise AdvTransferError("results['report']['description'] must be a string")
    metrics = _str_list(report.get("metrics"), "results['report']['metrics']")
    outcomes = _str_list(report.get("outcomes"), "results['report']['outcomes']")
    sweep = report.get("sweep")
    if sweep is not None and not isinstance(sweep, str):
        raise AdvTransferError(f"results['report']['sweep'] must be a record key or None, "
                               f"got {sweep!r}")
    groups = report.get("groups")
    if groups is not None and not isinstance(groups, str):
        raise AdvTransferError(f"results['report']['groups'] must be a record key or None, "
                               f"got {groups!r}")
    labels = report.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise AdvTransferError("results['report']['labels'] must map record keys to strings")
    columns = report.get("columns")
    if columns is not None:
        columns = _str_list(columns, "results['report']['columns']")
    return {"title": title, "description": description, "metrics": metrics,
            "outcomes": outcomes, "sweep": sweep, "groups": groups, "labels": dict(labels),
            "columns": columns}


def _check_record_keys(records: Sequence[Mapping[str, Any]], fields: Mapping[str, Any]) -> None:
    """Every key that the report's metrics, outcomes, sweep, groups and columns name is a key
    of some record."""
    known = {k for r in records for k in r}
    sweep, groups = fields["sweep"], fields["groups"]
    wanted = {"metrics": fields["metrics"], "outcomes": fields["outcomes"],
              "sweep": [sweep] if sweep else [], "groups": [groups] if groups else [],
              "columns": fields["columns"] or []}
    for name, keys in wanted.items():
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise AdvTransferError(
                f"results['report']['{name}'] names keys that no record has: {unknown}; "
                f"record keys are {sorted(known)}")


def _parse_matrices(raw: Any) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """``results['matrices']`` (name -> ``{'names', 'values'}``) as name -> (names, values),
    each a square matrix of numbers or None with one row and column per name."""
    if not isinstance(raw, Mapping):
        raise AdvTransferError("results['matrices'] must be a dict name -> {'names', 'values'}")
    matrices: dict[str, tuple[list[str], list[list[Any]]]] = {}
    for mname, m in raw.items():
        where = f"results['matrices'][{mname!r}]"
        if not isinstance(m, Mapping):
            raise AdvTransferError(f"{where} must be a dict with 'names' and 'values'")
        names = [str(s) for s in _seq(m.get("names"), f"{where}['names']")]
        values = [list(_seq(row, f"{where}['values'] row")) for row in
                  _seq(m.get("values"), f"{where}['values']")]
        if len(values) != len(names) or any(len(row) != len(names) for row in values):
            raise AdvTransferError(
                f"{where}['values'] must be a {len(names)} x {len(names)} list of lists "
                f"(one row and column per name), got {len(values)} rows of lengths "
                f"{[len(row) for row in values]}")
        for row in values:
            for v in row:
                if v is not None and not _is_number(v):
                    raise AdvTransferError(f"{where}['values'] entries must be numbers or None, "
                                           f"got {v!r}")
        matrices[str(mname)] = (names, values)
    return matrices


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AdvTransferError(f"{name} must be a list, got {type(value).__name__}")
    return value
