"""Where independent units of work run: in this process (the default) or as Ray tasks.

An executor maps a module-level function over items, ``fn(item, **shared)``, and returns the
results in the items' order. ``shared`` holds the arguments every unit needs (the target data,
the reference's attack): the Ray executor puts each value into the object store once, on its
own (``ray.put`` per key; a tensor as a NumPy array, which the workers of a machine read in
place, without a copy, and turn back into a tensor of the same dtype and shape), and every task
receives only the references.

* :class:`LocalExecutor`: a plain loop in this process, with a progress bar.
* :class:`RayExecutor`: one Ray task per item, with declared resources (``num_cpus`` per task,
  also its torch thread count ``int(max(1, num_cpus))``; ``num_gpus`` per task, default 1 when
  this machine has CUDA, else 0; both may be fractions). A task whose worker dies (killed, out
  of memory) is retried up to ``max_retries`` times by Ray; the units are deterministic (seeded
  by their identity), so a retried unit gives the same numbers. The first unit that fails
  (an exception, or a worker dead more often than the retries allow) cancels every other task
  of the map and is one :class:`AdvTransferError` line naming the unit. Python warnings raised
  in a task are re-raised here (same message and category) when its result arrives. Ray is an
  optional dependency: ``pip install 'advtransfer[ray]'``.

Devices: a worker never receives this process's device index. A device in ``shared`` (a
``torch.device``, or the string under the key ``"device"``) or in an item (a ``torch.device``)
reaches the worker as its type only, and the worker computes on ``cuda`` (the GPU Ray gave
it, through ``CUDA_VISIBLE_DEVICES``) when the type is CUDA and the task holds a GPU, else on
the CPU. Shared tensors are read-only in the workers (they are the object store's memory):
units must not modify them in place.

Pointing at a cluster: start Ray on the machines (``ray start --head`` on one, ``ray start
--address HEAD:6379`` on the others, with advtransfer installed in the same environment on
each), then pass ``address="HEAD:6379"`` (``--address`` in the CLI), or ``"auto"`` on a
machine of the cluster. For ``advtransfer run``, the run directory (``--out``) must be on a
file system every machine sees (NFS, a shared volume), because workers write their finished
units there; for :func:`advtransfer.rank` nothing is written, results come back to the
caller. Without ``address``, a local Ray is started with this machine's CPUs (or joined if
one is already running in this process); a Ray started here is shut down by
:meth:`RayExecutor.close` (a recipe run does it when it ends).
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.progress import track

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "check_resources", "close",
           "connect", "get_executor"]

#: The executor names :func:`get_executor` accepts.
EXECUTORS: tuple[str, ...] = ("local", "ray")


class Executor(Protocol):
    """Runs ``fn(item, **shared)`` for every item and returns the results in order."""

    name: str

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None, description: str = "units",
            progress: bool = False) -> list[Any]: ...


class LocalExecutor:
    """Every unit in this process, one after the other (memory: one unit at a time)."""

    name = "local"

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None, description: str = "units",
            progress: bool = False) -> list[Any]:
        shared = shared or {}
        return [fn(item, **shared) for item in track(list(items), description=description,
                                                     enabled=progress)]


_NO_RAY = "executor='ray' needs Ray: pip install 'advtransfer[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AdvTransferError(_NO_RAY) from None
    return ray


# ---------------------------------------------------------------------------------------------
# what travels to a worker: tensors as NumPy arrays, devices as their type
# ---------------------------------------------------------------------------------------------

#: Tensor dtypes NumPy holds as they are (bfloat16, for one, it does not).
_NUMPY_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                           torch.int64, torch.float16, torch.float32, torch.float64,
                           torch.complex64, torch.complex128})


@dataclass(frozen=True)
class _Array:
    """A tensor on its way to a worker: its values as a NumPy array (same dtype and shape),
    which Ray stores out of band, so that the workers of a machine map it without a copy."""

    array: np.ndarray


@dataclass(frozen=True)
class _DeviceType:
    """A device on its way to a worker: only its type; ``text`` when it was a string."""

    type: str
    text: bool


def _to_store(value: Any) -> Any:
    """``value`` with every plain tensor (strided, no gradient, a NumPy dtype) replaced by an
    :class:`_Array` and every ``torch.device`` by a :class:`_DeviceType`, inside plain tuples,
    lists and dicts too; anything else as it is."""
    if type(value) is torch.Tensor:
        if (value.layout == torch.strided and not value.requires_grad
                and value.dtype in _NUMPY_DTYPES and not value.is_quantized):
            return _Array(value.detach().cpu().resolve_conj().resolve_neg().contiguous().numpy())
        return value
    if isinstance(value, torch.device):
        return _DeviceType(value.type, text=False)
    if type(value) in (tuple, list):
        return type(value)(_to_store(v) for v in value)
    if type(value) is dict:
        return {k: _to_store(v) for k, v in value.items()}
    return value


def _from_store(value: Any, has_gpu: bool) -> Any:
    """The inverse of :func:`_to_store` in a worker: arrays back to tensors (sharing their
    memory) and device types to this worker's device (:func:`_worker_device`; ``has_gpu``:
    whether the task holds a GPU)."""
    if isinstance(value, _Array):
        with warnings.catch_warnings():  # the store's arrays are read-only: said in the docs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(value.array)
    if isinstance(value, _DeviceType):
        device = _worker_device(value.type, has_gpu)
        return str(device) if value.text else device
    if type(value) in (tuple, list):
        return type(value)(_from_store(v, has_gpu) for v in value)
    if type(value) is dict:
        return {k: _from_store(v, has_gpu) for k, v in value.items()}
    return value


def _shared_to_store(shared: dict[str, Any]) -> dict[str, Any]:
    """:func:`_to_store` of every shared value, and the string under ``"device"`` (as the
    recipes and ``rank`` pass it: ``"cuda:1"``, ``"cpu"``) as a device type."""
    out = {k: _to_store(v) for k, v in shared.items()}
    text = shared.get("device")
    if isinstance(text, str):
        try:
            out["device"] = _DeviceType(torch.device(text).type, text=True)
        except (RuntimeError, TypeError):
            pass  # not a device: passed on as it is
    return out


def _worker_device(device_type: str, has_gpu: bool) -> torch.device:
    """A worker's device for a driver device of type ``device_type``: ``cuda`` (the first GPU
    Ray made visible to the task) when that type is CUDA and the task holds a GPU, else the
    CPU."""
    return torch.device("cuda" if device_type == "cuda" and has_gpu else "cpu")


def _task_has_gpu() -> bool:
    """Whether this Ray task was given a GPU that torch can use."""
    import ray

    return bool(ray.get_gpu_ids()) and torch.cuda.is_available()


def _call(fn: Callable[..., Any], item: Any, shared_refs: dict[str, Any],
          threads: int) -> tuple[Any, float, list[tuple[type[Warning], str]]]:
    """The body of a Ray task: ``threads`` torch threads, the shared values read from the
    object store (tensors back from arrays, devices resolved for this worker), then the unit.
    Returns the unit's result, the seconds the unit took (``fn`` alone) and the warnings it
    raised (category, message)."""
    import ray

    torch.set_num_threads(threads)
    has_gpu = _task_has_gpu()
    keys = list(shared_refs)
    values = ray.get([shared_refs[k] for k in keys]) if keys else []
    shared = {k: _from_store(v, has_gpu) for k, v in zip(keys, values, strict=True)}
    item = _from_store(item, has_gpu)
    with warnings.catch_warnings(record=True) as caught:
        start = time.perf_counter()
        result = fn(item, **shared)
        seconds = time.perf_counter() - start
    return result, seconds, [(w.category, str(w.message)) for w in caught]


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(round(value, 4) - value) < 1e-12)


def check_resources(num_cpus: float | None, num_gpus: float | None, *,
                    names: tuple[str, str] = ("num_cpus", "num_gpus")) -> None:
    """Raise :class:`AdvTransferError` (naming ``names``, the options as the caller calls
    them) unless ``num_cpus`` is None or a number > 0 and ``num_gpus`` None or a number >= 0,
    each with at most 4 decimals (Ray's precision for fractional resources)."""
    if num_cpus is not None and not (_number(num_cpus) and num_cpus > 0):
        raise AdvTransferError(f"{names[0]} must be > 0 (CPUs per Ray task; fractions such as "
                               f"0.5 allowed, at most 4 decimals); got {num_cpus!r}")
    if num_gpus is not None and not (_number(num_gpus) and num_gpus >= 0):
        raise AdvTransferError(f"{names[1]} must be >= 0 (GPUs per Ray task, 0: none; "
                               f"fractions such as 0.25 allowed, at most 4 decimals); got "
                               f"{num_gpus!r}")


#: Seconds to wait for cancelled tasks to end before the first failure is raised.
_CANCEL_WAIT_S = 30.0


def _cancel(ray: Any, pending: list[Any]) -> None:
    """Cancel every task of ``pending`` (``force``: a running one's worker is killed, and a
    cancelled task is never retried) until they have all ended (at most
    :data:`_CANCEL_WAIT_S`), so that none is left running after the map. The cancellation is
    repeated every second for the tasks not ended yet: Ray loses the cancellation of a task
    handed to a worker that is still starting (seen on a loaded machine)."""
    deadline = time.monotonic() + _CANCEL_WAIT_S
    left = list(pending)
    while left and time.monotonic() < deadline:
        for ref in left:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001, S110 - finished meanwhile: nothing to cancel
                pass
        _, left = ray.wait(left, num_returns=len(left), timeout=1.0)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _failure(ray: Any, items: Sequence[Any], index: int, exc: BaseException,
             max_retries: int) -> str:
    """One line for the first failed unit: its index and item (``repr`` cut at 80
    characters), the exception's type and the first line of its message (the unit's own
    exception, not Ray's wrapper), and for a dead worker that the retries are exhausted."""
    what = repr(items[index])
    what = what if len(what) <= 80 else what[:77] + "..."
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    cause = cause if cause is not None else exc
    died = isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError,
                            ray.exceptions.NodeDiedError))
    line = (f"unit {index} of {len(items)} ({what}) failed on Ray: {type(cause).__name__}: "
            f"{_first_line(str(cause))}")
    if died:
        line += f" (its worker died {max_retries + 1} times; max_retries={max_retries} exhausted)"
    return line


class RayExecutor:
    """Every unit as a Ray task (see the module docstring).

    Args:
        address: the Ray cluster to join (``"HOST:6379"``, ``"auto"``, ``"ray://HOST:10001"``);
            ``None`` starts a local Ray, or uses the one already initialised in this process.
        num_cpus: CPUs each task declares (> 0, fractions allowed); each task computes with
            ``int(max(1, num_cpus))`` torch threads.
        num_gpus: GPUs each task declares (>= 0, fractions allowed); default 1 when CUDA is
            available here, else 0.
        max_retries: how often Ray retries a task whose worker died.
        local_cpus: CPUs of a local Ray started here (default: all of this machine's).

    Attributes:
        worker_seconds: the seconds the units took inside their tasks (``fn`` alone, summed
            over every task of every :meth:`map`), for comparison with a run's wall time.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1,
                 num_gpus: float | None = None, max_retries: int = 3,
                 local_cpus: int | None = None) -> None:
        check_resources(num_cpus, num_gpus)
        if max_retries < 0:
            raise AdvTransferError(f"max_retries must be >= 0; got {max_retries}")
        if importlib.util.find_spec("ray") is None:  # before any work, without importing it
            raise AdvTransferError(_NO_RAY)
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = (1.0 if torch.cuda.is_available() else 0.0) if num_gpus is None \
            else num_gpus
        self.max_retries = max_retries
        self.local_cpus = local_cpus
        self.worker_seconds = 0.0
        self._started = False  # whether ray.init was called here (then close() shuts it down)

    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": True,
                                      "include_dashboard": False}
            if self.address is None:
                kwargs["num_cpus"] = self.local_cpus or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure to join is one clear error
                raise AdvTransferError(self._unreachable(exc)) from None
            self._started = True
        return ray

    def _unreachable(self, exc: Exception) -> str:
        """The one-line error for a cluster that cannot be joined."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        # Ray reports a refused token as a plain ConnectionError (the cause is only in its
        # log lines): say what to set whenever the token setting is off here
        auth = ("auth" in type(exc).__name__.lower() or "AuthToken" in str(exc)
                or os.environ.get("RAY_AUTH_MODE", "").lower() != "token")
        return (f"cannot reach the Ray cluster at address {self.address!r} "
                f"({type(exc).__name__}: {text[:300]})"
                + (". If the cluster uses token authentication (a `ray start` on a machine "
                   "where Ray has run before does), set RAY_AUTH_MODE=token here as for "
                   "every `ray start`, with the cluster's token in ~/.ray/auth_token or "
                   "RAY_AUTH_TOKEN (see the README's cluster steps)" if auth else ""))

    def connect(self) -> None:
        """Join the cluster (or start a local Ray) now: callers do this before any work, so
        that an unreachable or refusing cluster is an error at once, not after the first
        stage."""
        self._init()

    def close(self) -> None:
        """Shut Ray down if this executor started it (``ray.init`` was called here); a Ray
        that was already running in this process (a user's) is left alone. Harmless to call
        again, or before any work; a later :meth:`map` starts Ray anew."""
        if self._started:
            self._started = False
            ray = _ray()
            if ray.is_initialized():
                ray.shutdown()

    def _put(self, ray: Any, value: Any) -> Any:
        """One object put into the store (a hook for measurements)."""
        return ray.put(value)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None, description: str = "units",
            progress: bool = False) -> list[Any]:
        """``[fn(item, **shared) for item in items]`` as one Ray task per item: ``fn`` and
        each shared value put into the object store once, the results collected as they
        finish (each task's warnings re-raised here). The first failure cancels the other
        tasks and is raised as one :class:`AdvTransferError` line (:func:`_failure`)."""
        items = list(items)
        if not items:
            return []
        ray = self._init()
        task = ray.remote(_call).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                         max_retries=self.max_retries, retry_exceptions=False)
        fn_ref = self._put(ray, fn)
        refs_of_shared = {k: self._put(ray, v)
                          for k, v in _shared_to_store(shared or {}).items()}
        threads = int(max(1, self.num_cpus))
        refs = [task.remote(fn_ref, _to_store(item), refs_of_shared, threads) for item in items]
        where = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            for _ in track(range(len(refs)), description=description, enabled=progress):
                done, pending = ray.wait(pending, num_returns=1)
                i = where[done[0]]
                try:
                    results[i], seconds, caught = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - every failure is one line
                    raise AdvTransferError(_failure(ray, items, i, exc, self.max_retries)
                                           ) from None
                self.worker_seconds += seconds
                for category, message in caught:
                    warnings.warn(message, category, stacklevel=2)
        except BaseException:  # the first failure, Ctrl-C: nothing is left running
            _cancel(ray, pending)
            raise
        return results


def get_executor(executor: str | Executor | None = "local", *, address: str | None = None,
                 num_cpus: float | None = None, num_gpus: float | None = None) -> Executor:
    """An executor from its name (``"local"``, ``"ray"``) or an executor object itself.
    ``address``, ``num_cpus`` and ``num_gpus`` (Ray only: the cluster to join, the CPUs and
    GPUs per task, see :class:`RayExecutor`) are refused with the local executor."""
    if executor is None:
        executor = "local"
    check_resources(num_cpus, num_gpus)
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise AdvTransferError(f"executor must be one of {list(EXECUTORS)}; got "
                                   f"{executor!r}")
        if executor == "local":
            if address is not None:
                raise AdvTransferError("address is for executor='ray'; the local executor runs "
                                       "in this process")
            for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
                if value is not None:
                    raise AdvTransferError(f"{name} is for executor='ray' (resources per Ray "
                                           "task); the local executor runs in this process")
            return LocalExecutor()
        return RayExecutor(address, num_cpus=1 if num_cpus is None else num_cpus,
                           num_gpus=num_gpus)
    if not callable(getattr(executor, "map", None)):
        raise AdvTransferTypeError(f"executor must be 'local', 'ray' or an object with a map() "
                                   f"method; got {type(executor).__name__}")
    if num_cpus is not None or num_gpus is not None:
        raise AdvTransferError("num_cpus and num_gpus are for executor='ray' by name; set them "
                               "on an executor object when making it (RayExecutor(num_cpus=...))")
    return executor


def connect(executor: Executor) -> None:
    """Join ``executor``'s cluster now, when it has one (:meth:`RayExecutor.connect`): callers
    do this before any work, so that an unreachable cluster is an error at once. Executors
    without a ``connect`` method (this process, a user's own) have nothing to join."""
    join = getattr(executor, "connect", None)
    if callable(join):
        join()


def close(executor: Executor) -> None:
    """Release what ``executor`` started, when it has a ``close`` method
    (:meth:`RayExecutor.close`: a Ray it started is shut down); harmless to call twice."""
    release = getattr(executor, "close", None)
    if callable(release):
        release()
