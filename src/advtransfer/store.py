"""The results store: every finished unit of work, written atomically and keyed by its config.

A unit (a trained model, a fine-tune result, a pair measurement) is identified by its *kind*
and the canonical JSON of its configuration, which includes the keys of the units it depends on.
Its key is ``<kind>-<sha256(config)[:16]>``; records are JSON files under ``records/`` and models
safetensors files under ``models/``, tensor results (a reference model's attack) safetensors
files under ``tensors/``, each written to a temporary file and renamed into place.
A rerun finds finished units and recomputes nothing; a run killed at any moment leaves only
complete files, so the rerun finishes with the same numbers; a changed configuration changes
the key, so stale results are never reused. Nothing is ever deleted; nothing is created
before the first unit is written (a refused run leaves no trace).

A run (the driver process) holds the directory's lock for its whole length (:meth:`Store.lock`),
so a second process on the same directory is refused with a clear error instead of mixing its
files in. Workers that only compute units for the driver do not take it: every unit file is
written atomically, so they never need to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.executors import Executor, LocalExecutor
from advtransfer.fileio import (
    CorruptFileError,
    check_creatable,
    read_json,
    to_jsonable,
    write_json,
)
from advtransfer.progress import warn
from advtransfer.units import UnitConfig, canonical

__all__ = ["Store", "code_fingerprint"]

#: The run lock and its holder's pid/host/start time; dot-files, so that a directory holding
#: only them still counts as empty (see :meth:`Store.check_run`).
LOCK_FILE = ".advtransfer.lock"
OWNER_FILE = ".advtransfer.owner"
#: How long a second process waits for a run directory in use before it is refused (seconds).
LOCK_TIMEOUT_S = 1.0


#: The key of ``run.json`` that records where a run was computed (not part of its identity).
ENVIRONMENT = "environment"
#: Environment entries whose change a resume only reports: another thread count changes the
#: order of floating-point reductions, not the computation (``--threads auto`` follows the
#: machine's load, so it changes between runs). Other changes are refused (see check_run).
REPORTED_ONLY = frozenset({"threads"})


@functools.cache
def _source_digest() -> str:
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def code_fingerprint() -> str:
    """16 hex digits of sha256 over the source of every module of the installed advtransfer
    package (paths and contents) and the versions of the unit kinds, recorded in
    ``results.json`` as ``code``: a finished run is returned as it is only when the same code
    asks for it (any other code reruns the recipe, which reuses every unit whose kind's
    version is unchanged, :mod:`advtransfer.units`, and rewrites the results and the
    report)."""
    from advtransfer.units import KINDS

    versions = canonical({k: v.version for k, v in KINDS.items()})
    return hashlib.sha256(f"{_source_digest()}:{versions}".encode()).hexdigest()[:16]


class Store:
    """Finished units under ``root`` (see the module docstring).

    Nothing is created until the first unit is written: opening a store only checks that
    ``root`` can be created (see :func:`advtransfer.fileio.check_creatable`), and
    :meth:`check_run` only reads, so a run refused for a bad configuration or missing data
    leaves no trace. A record or ``run.json`` that is not valid JSON (a truncated file) is named
    on stderr and recomputed, resp. reported with what to do."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise AdvTransferError(f"--out {self.root} is not a writable directory (a file)")
        check_creatable(self.root, "--out")
        # unit files used by this run (relative to root) -> "computed" or "reused"; a unit
        # computed by this run and read again later still counts as computed, once
        self._units: dict[str, str] = {}
        #: seconds this process spent computing units (outermost computations only: a unit
        #: computed inside another's computation is not counted twice), see :meth:`_timed`
        self.compute_seconds = 0.0
        self._depth = 0
        self._last_tensors: tuple[Path, dict[str, torch.Tensor]] | None = None
        self._identity: dict | None = None  # run.json content, written with the first unit
        self._env_said = False  # a resume in another environment is said once
        self._ready = False
        self._lock_timeout: float | None = None  # set inside lock(): the run lock is wanted
        self._lock: FileLock | None = None  # held
        self._growable: tuple[str, ...] = ()  # configuration lists that may grow (check_run)
        self._grow = False  # this run extends the stored one: run.json is rewritten

    def prepare(self) -> None:
        """Create the run directory (and ``run.json`` of :meth:`check_run`): called before the
        first file is written. Inside :meth:`lock`, the lock of a directory created here is
        taken before anything else is written into it."""
        if self._ready:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self._lock_timeout is not None and self._lock is None:
                self._acquire()
            (self.root / "records").mkdir(parents=True, exist_ok=True)
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            if self._identity is not None and (self._grow
                                               or not (self.root / "run.json").exists()):
                write_json(self.root / "run.json", self._identity)
        except OSError as exc:
            raise AdvTransferError(f"--out {self.root} is not a writable directory: "
                                   f"{exc.strerror or exc}") from None
        self._ready = True

    def check_writable(self, path: Path, kind: str) -> None:
        """Refuse, before computing it, a unit whose file could not be written (its folder, or
        the nearest existing folder above it, is not writable): the work would be lost."""
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise AdvTransferError(
                f"--out {self.root}: {folder} is not writable, so this {kind} unit would be "
                "computed and lost; nothing was computed. Give a writable --out (a finished "
                "run in a read-only place can be reported with `advtransfer report DIR --out "
                "OTHER`).")

    @contextmanager
    def _timed(self, executor: Executor | None = None) -> Iterator[None]:
        """Add the block's wall time to :attr:`compute_seconds` when it is a unit computed in
        this process (not one handed to an executor that runs it elsewhere, which counts its
        own ``worker_seconds``), and not nested in another unit's computation."""
        elsewhere = executor is not None and not isinstance(executor, LocalExecutor)
        start, self._depth = time.perf_counter(), self._depth + 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and not elsewhere:
                self.compute_seconds += time.perf_counter() - start

    @property
    def touched(self) -> list[str]:
        """The unit files this run used, relative to the root."""
        return list(self._units)

    @property
    def hits(self) -> int:
        """Distinct units found stored (not computed by this run)."""
        return sum(v == "reused" for v in self._units.values())

    @property
    def misses(self) -> int:
        """Distinct units computed by this run."""
        return sum(v == "computed" for v in self._units.values())

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process (a Ray worker's closure): without the run lock, which
        stays with this process, and without the cached tensors."""
        state = dict(self.__dict__)
        state.update(_lock=None, _lock_timeout=None, _last_tensors=None)
        return state

    @property
    def units(self) -> dict[str, str]:
        """The unit files this run used (relative to the root) -> "computed" or "reused"."""
        return dict(self._units)

    def adopt(self, units: dict[str, str]) -> None:
        """Count units another process used for this run (e.g. a Ray worker's
        :attr:`units`); a unit this run already used keeps its first status."""
        for path, status in units.items():
            self._units.setdefault(path, status)

    def _use(self, path: Path, status: str) -> None:
        self._units.setdefault(str(path.relative_to(self.root)), status)

    @contextmanager
    def lock(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the run lock (``LOCK_FILE`` in ``root``) while the block runs; released on exit,
        also on an exception or Ctrl-C (and by the OS when the process is killed).

        An existing directory is locked at once; a new one when :meth:`prepare` creates it, so
        a run refused before its first unit still leaves no trace. Two processes racing to
        create the same directory are safe: only the one holding the lock writes, and once it
        holds it the identity of :meth:`check_run` is checked again (another run may have
        written here since). The lock is per run: workers writing units for it (atomically)
        must not take it. Raises :class:`AdvTransferError` naming the holder's pid and start
        time when another process holds the lock for ``timeout`` seconds."""
        self._lock_timeout = timeout
        try:
            if self.root.is_dir():
                self._acquire()
            yield
        finally:
            self._lock_timeout = None
            self._release()

    def _acquire(self) -> None:
        lock = FileLock(self.root / LOCK_FILE)
        try:
            lock.acquire(timeout=self._lock_timeout)
        except Timeout:
            raise AdvTransferError(
                f"{self.root} is in use by another advtransfer process ({self._holder()}); "
                "wait for it or choose another --out") from None
        except OSError as exc:
            raise AdvTransferError(f"--out {self.root} is not a writable directory: "
                                   f"{exc.strerror or exc}") from None
        self._lock = lock
        try:
            write_json(self.root / OWNER_FILE, {
                "pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")})
            if self._identity is not None:
                self.check_run(self._identity, growable=self._growable)
            self._remove_leftovers()
        except BaseException:
            self._release()
            raise

    def _remove_leftovers(self) -> None:
        """Delete the temporary files (``.NAME.*.tmp``, from
        :func:`advtransfer.fileio.atomic_write_with`) that a writer killed mid-write left behind:
        with the lock held no other writer of this directory runs, so every such file is a
        leftover (the finished files are whole)."""
        leftovers = [p for d in (self.root, *(self.root / n for n in ("records", "models",
                                                                        "tensors")))
                     if d.is_dir() for p in d.glob(".*.tmp")]
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            warn(f"removed {len(leftovers)} temporary file(s) an interrupted run left in "
                 f"{self.root}")

    def _holder(self) -> str:
        """'pid N, started T' (with 'on HOST' when not this machine) from ``OWNER_FILE``."""
        try:
            owner = read_json(self.root / OWNER_FILE)
            pid, host, started = owner["pid"], owner["host"], owner["started"]
        except (OSError, AdvTransferError, KeyError, TypeError):
            return "pid unknown"
        where = "" if host == socket.gethostname() else f" on {host}"
        return f"pid {pid}{where}, started {started}"

    def _release(self) -> None:
        if self._lock is None:
            return
        try:
            (self.root / OWNER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def record_path(self, unit: UnitConfig) -> Path:
        return self.root / "records" / f"{unit.key}.json"

    def model_path(self, unit: UnitConfig) -> Path:
        return self.root / "models" / f"{unit.key}.safetensors"

    def _stored(self, unit: UnitConfig) -> dict | None:
        """The stored result of a unit, or None when it is missing or its file is corrupt
        (which is said on stderr)."""
        path = self.record_path(unit)
        if not path.exists():
            return None
        try:
            stored = read_json(path)
        except CorruptFileError as exc:
            warn(f"{exc}; recomputing this {unit.kind} unit")
            return None
        if isinstance(stored, dict) and stored.get("config") == json.loads(canonical(unit)):
            return stored["result"]
        return None

    def record(self, unit: UnitConfig, compute: Callable[[], dict]) -> dict:
        """The stored result of ``unit`` (its typed configuration,
        :class:`advtransfer.units.UnitConfig`), computing and storing it first if it is not
        there (or if its file is corrupt, which is said on stderr)."""
        path = self.record_path(unit)
        stored = self._stored(unit)
        if stored is not None:
            self._use(path, "reused")
            return stored
        self.check_writable(path, unit.kind)
        with self._timed():
            result = compute()
        self.prepare()
        write_json(path, {"kind": unit.kind, "config": unit.as_dict(), "result": result})
        self._use(path, "computed")
        return json.loads(json.dumps(to_jsonable(result)))

    def records(self, units: Sequence[tuple[UnitConfig, Any]],
                compute: Callable[..., dict], *, executor: Executor | None = None,
                shared: dict[str, Any] | None = None, description: str = "units",
                progress: bool = False) -> list[dict]:
        """Many independent units: ``units`` holds ``(unit, payload)`` pairs; the missing ones
        are computed as ``compute(payload, **shared)`` by ``executor`` (default: in this
        process), each written to the store by whoever computed it (a Ray worker writes its own
        unit, so a unit finished before a crash is never recomputed). ``compute`` must be a
        module-level function for the Ray executor. Returns the results in the order of
        ``units``."""
        results: list[dict | None] = [self._stored(unit) for unit, _ in units]
        for (unit, _), r in zip(units, results, strict=True):
            if r is not None:
                self._use(self.record_path(unit), "reused")
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            for i in todo:
                self.check_writable(self.record_path(units[i][0]), units[i][0].kind)
            self.prepare()
            with self._timed(executor):
                done = (executor or LocalExecutor()).map(
                    _compute_record, [(units[i][0], units[i][1]) for i in todo],
                    shared={"_path_root": str(self.root), "_compute": compute,
                            **(shared or {})}, description=description, progress=progress)
            for i, r in zip(todo, done, strict=True):
                results[i] = r
                self._use(self.record_path(units[i][0]), "computed")
        return results  # type: ignore[return-value]

    def model(self, unit: UnitConfig, build: Callable[[], nn.Module],
              train: Callable[[nn.Module], nn.Module]) -> nn.Module:
        """A trained model: loaded from the store when there, else built, trained and saved
        (also when the stored file cannot be read, which is said on stderr). ``build`` must
        return the untrained architecture (the weights are loaded into it)."""
        from advtransfer.models.checkpoint import load_into, save_model

        path = self.model_path(unit)
        model = build()
        if path.exists():
            try:
                loaded = load_into(model, path).eval()
            except AdvTransferError as exc:
                warn(f"{path} cannot be loaded ({exc}); retraining this {unit.kind} unit")
                model = build()
            else:
                self._use(path, "reused")
                return loaded
        self.check_writable(path, unit.kind)
        with self._timed():
            model = train(model)
        self._use(path, "computed")
        self.prepare()
        save_model(model, path, metadata={"kind": unit.kind, "config": canonical(unit)})
        return model.eval()

    def tensors_path(self, unit: UnitConfig) -> Path:
        return self.root / "tensors" / f"{unit.key}.safetensors"

    def tensors(self, unit: UnitConfig,
                compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A stored unit whose result is a set of named tensors (e.g. a reference model's
        attack, :class:`advtransfer.reference.ReferenceAttack`), kept as one safetensors file
        under ``tensors/`` with the unit's configuration in its metadata: read when there (and
        its configuration matches), else computed and written atomically. An unreadable file
        is said on stderr and recomputed."""
        from safetensors import safe_open

        from advtransfer.models.checkpoint import save_model

        path = self.tensors_path(unit)
        wanted = canonical(unit)
        if self._last_tensors is not None and self._last_tensors[0] == path:
            return self._last_tensors[1]  # the unit this run used last: no second read
        if path.exists():
            try:
                with safe_open(str(path), framework="pt") as f:
                    stored = (f.metadata() or {}).get("config")
                    loaded = {k: f.get_tensor(k) for k in f.keys()}
            except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
                warn(f"{path} cannot be read ({exc}); recomputing this {unit.kind} unit")
            else:
                if stored == wanted:
                    self._use(path, "reused")
                    self._last_tensors = (path, loaded)
                    return loaded
        self.check_writable(path, unit.kind)
        with self._timed():
            result = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
        self.prepare()
        save_model(result, path, metadata={"kind": unit.kind, "config": wanted})
        self._use(path, "computed")
        self._last_tensors = (path, result)
        return result

    def check_run(self, identity: dict, *, growable: Sequence[str] = (),
                  environment: dict | None = None,
                  allow_environment_change: bool = False) -> None:
        """Check that this directory is new, empty, or a run of the same recipe and
        configuration, whose identity is then written (with the first unit) to ``run.json``.

        ``growable`` names configuration fields (lists, e.g. a pool of candidate models) that
        may grow between runs: a run whose configuration differs from the stored one only by
        entries added to those lists is accepted (every finished unit is
        reused, only the new entries' units are computed) and its identity replaces the stored
        one. Raises :class:`AdvTransferError` when the directory was written by a different
        configuration (naming the differing keys), when its ``run.json`` is corrupt, or when it
        is a non-empty folder that is not a run directory (dot-files such as the run lock
        do not count). Nothing is deleted or written.

        ``environment`` (advtransfer's and torch's versions, the device type, the thread
        count) is recorded beside the identity. A resume with another advtransfer or torch
        version or device type is refused with an :class:`AdvTransferError` naming the
        differences, since its stored units were computed there and one table would mix both;
        with ``allow_environment_change`` it goes on, reusing them, and says so in a warning.
        Another thread count (:data:`REPORTED_ONLY`) is only said in that warning."""
        self._growable = tuple(growable)
        path = self.root / "run.json"
        env = environment if environment is not None else identity.get(ENVIRONMENT)
        new = json.loads(canonical({k: v for k, v in identity.items() if k != ENVIRONMENT}))
        if path.exists():
            try:
                old = read_json(path)
            except CorruptFileError as exc:
                raise AdvTransferError(
                    f"{exc}. It records which recipe and configuration own {self.root}. If "
                    f"you are rerunning the same command, delete {path} and rerun: finished "
                    "units are kept and reused. Otherwise choose another --out.") from None
            old_env = old.pop(ENVIRONMENT, None)
            if old_env and env and old_env != env and not self._env_said:
                self._env_said = True
                changed = ", ".join(f"{k} {old_env.get(k)!r} then, {env.get(k)!r} now"
                                    for k in sorted({*old_env, *env})
                                    if old_env.get(k) != env.get(k))
                said = (f"{self.root} was started in another environment ({changed}), where "
                        "its stored units were computed")
                if not allow_environment_change and {
                        k for k in {*old_env, *env} if old_env.get(k) != env.get(k)
                } - REPORTED_ONLY:
                    raise AdvTransferError(
                        f"{said}: resuming here would mix numbers of both in one table. Rerun "
                        "with --allow-environment-change to reuse them anyway, or use a new "
                        "--out for numbers computed here only. Nothing was changed.")
                warn(f"{said}: they are reused as computed there")
            if old != new and _grown(old, new, self._growable):
                self._grow = True
            elif old != new:
                diffs = _differences(old, new)
                raise AdvTransferError(
                    f"{self.root} holds a run of a different configuration (differs in "
                    f"{', '.join(diffs[:8])}); choose another --out, or rerun with the same "
                    "configuration to resume. Nothing was changed."
                )
        elif self.root.is_dir() and any(not p.name.startswith(".") for p in self.root.iterdir()):
            raise AdvTransferError(
                f"--out {self.root} is a non-empty folder that is not a run directory (it has "
                "no run.json); give a new or empty directory. Nothing was written.")
        self._identity = {**new, **({ENVIRONMENT: env} if env else {})}


def _compute_record(item: tuple[UnitConfig, Any], *, _path_root: str,
                    _compute: Callable[..., dict], **shared: Any) -> dict:
    """One unit of :meth:`Store.records`, computed and written where it runs."""
    unit, payload = item
    result = _compute(payload, **shared)
    path = Path(_path_root) / "records" / f"{unit.key}.json"
    write_json(path, {"kind": unit.kind, "config": unit.as_dict(), "result": result})
    return json.loads(json.dumps(to_jsonable(result)))


def _grown(old: Any, new: Any, growable: Sequence[str]) -> bool:
    """Whether the identity ``new`` equals ``old`` but for entries added to the configuration's
    ``growable`` lists (none removed)."""
    if not (isinstance(old, dict) and isinstance(new, dict) and growable
            and isinstance(old.get("config"), dict) and isinstance(new.get("config"), dict)):
        return False
    old_c, new_c = old["config"], new["config"]
    for name in growable:
        before, after = old_c.get(name), new_c.get(name)
        if not (isinstance(before, list) and isinstance(after, list)
                and all(item in after for item in before)):
            return False
    rest = [k for k in set(old_c) | set(new_c) if k not in growable]
    return ({k: v for k, v in old.items() if k != "config"}
            == {k: v for k, v in new.items() if k != "config"}
            and all(old_c.get(k) == new_c.get(k) for k in rest))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'value'} ({old!r} -> {new!r})"]
