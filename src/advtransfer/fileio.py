"""Atomic file writes: a file is either its old content or its complete new content, never half.

Write to a temporary file in the same directory, flush and fsync it, then ``os.replace`` it over
the destination (atomic on POSIX and Windows).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from advtransfer.errors import AdvTransferError


def _new_file_mode(path: Path) -> int:
    """An existing file's mode, else what ``open()`` would give: 0o666 less the umask (mkstemp's
    0o600 would make results unreadable to colleagues sharing the run directory)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file in the same directory,
    which is then given the mode of :func:`_new_file_mode`, fsynced and moved over ``path``
    (parents are created). On any error the temporary file is removed and ``path`` is as it was.
    The one atomic writer of the package (JSON, text, figures, checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode(path))
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents are created)."""
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy values converted, NaN/inf written as null (valid JSON)."""
    return _jsonable(obj)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def check_creatable(path: str | os.PathLike[str], option: str) -> Path:
    """Check, leaving nothing behind, that ``path`` (a file or directory to be written) can be
    created with nothing but what was asked: its parent must be an existing writable directory,
    or lie inside the current working directory (where missing parents such as ``runs/`` are
    created on the first write). Returns the path; raises :class:`AdvTransferError` naming
    ``option`` otherwise (never creates directories elsewhere, e.g. at the filesystem root)."""
    path = Path(path)
    parent = Path(os.path.abspath(path)).parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise AdvTransferError(f"{option} {path}: {ancestor} is not a writable directory")
    try:  # os.access says yes to root everywhere (/proc, read-only mounts): try for real
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise AdvTransferError(f"{option} {path}: {ancestor} is not a writable directory "
                               f"({exc.strerror or exc})") from None
    if ancestor != parent and not parent.is_relative_to(Path.cwd()):
        raise AdvTransferError(f"{option} {path}: the directory {parent} does not exist; create "
                               f"it first (only {path.name} is created outside the current "
                               "directory)")
    return path


class CorruptFileError(AdvTransferError):
    """A file that exists but does not hold valid JSON (typically truncated)."""


def read_json(path: str | os.PathLike[str]) -> Any:
    """The content of a JSON file; :class:`CorruptFileError` naming the file when it is not valid
    JSON (e.g. truncated by a full disk or a copy cut short)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise CorruptFileError(f"{path} is not valid JSON ({reason}; the file is probably "
                               "truncated)") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
