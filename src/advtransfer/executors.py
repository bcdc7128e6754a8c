"""Where independent units of work run: in this process (the default) or as Ray tasks.

An executor maps a module-level function over items, ``fn(item, **shared)``, and returns the
results in the items' order. ``shared`` holds the arguments every unit needs (the target data,
the reference's attack): the Ray executor puts each into the object store once, instead of
sending it with every task.

* :class:`LocalExecutor`: a plain loop in this process, with a progress bar.
* :class:`RayExecutor`: one Ray task per item, with declared resources (``num_cpus`` per task,
  ``num_gpus`` per task, default 1 when this machine has CUDA, else 0). A task whose worker
  dies (killed, out of memory) is retried up to ``max_retries`` times by Ray; the units are
  deterministic (seeded by their identity), so a retried unit gives the same numbers. Ray is an
  optional dependency: ``pip install 'advtransfer[ray]'``.

Pointing at a cluster: start Ray on the machines (``ray start --head`` on one, ``ray start
--address HEAD:6379`` on the others, with advtransfer installed in the same environment on
each), then pass ``address="HEAD:6379"`` (``--address`` in the CLI), or ``"auto"`` on a
machine of the cluster. For ``advtransfer run``, the run directory (``--out``) must be on a
file system every machine sees (NFS, a shared volume), because workers write their finished
units there; for :func:`advtransfer.rank` nothing is written, results come back to the
caller. Without ``address``, a local Ray is started with this machine's CPUs (or joined if
one is already running in this process).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.progress import track

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "connect", "get_executor"]

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


def _call(fn: Callable[..., Any], item: Any, shared: dict[str, Any]) -> Any:
    """The body of a Ray task: one thread pool per task CPU, then the unit."""
    cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if cpus > 0:
        torch.set_num_threads(cpus)
    return fn(item, **shared)


class RayExecutor:
    """Every unit as a Ray task (see the module docstring).

    Args:
        address: the Ray cluster to join (``"HOST:6379"``, ``"auto"``, ``"ray://HOST:10001"``);
            ``None`` starts a local Ray, or uses the one already initialised in this process.
        num_cpus: CPUs each task declares (and uses as its torch thread count).
        num_gpus: GPUs each task declares; default 1 when CUDA is available here, else 0.
        max_retries: how often Ray retries a task whose worker died.
        local_cpus: CPUs of a local Ray started here (default: all of this machine's).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1,
                 num_gpus: float | None = None, max_retries: int = 3,
                 local_cpus: int | None = None) -> None:
        if num_cpus <= 0:
            raise AdvTransferError(f"num_cpus must be > 0; got {num_cpus}")
        if num_gpus is not None and num_gpus < 0:
            raise AdvTransferError(f"num_gpus must be >= 0; got {num_gpus}")
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

    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False,
                                      "include_dashboard": False}
            if self.address is None:
                kwargs["num_cpus"] = self.local_cpus or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure to join is one clear error
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                # Ray reports a refused token as a plain ConnectionError (the cause is only
                # in its log lines): say what to set whenever the token setting is off here
                auth = ("auth" in type(exc).__name__.lower() or "AuthToken" in str(exc)
                        or os.environ.get("RAY_AUTH_MODE", "").lower() != "token")
                raise AdvTransferError(
                    f"cannot reach the Ray cluster at address {self.address!r} "
                    f"({type(exc).__name__}: {text[:300]})"
                    + (". If the cluster uses token authentication (a `ray start` on a machine "
                       "where Ray has run before does), set RAY_AUTH_MODE=token here as for "
                       "every `ray start`, with the cluster's token in ~/.ray/auth_token or "
                       "RAY_AUTH_TOKEN (see the README's cluster steps)" if auth else "")
                ) from None
        return ray

    def connect(self) -> None:
        """Join the cluster (or start a local Ray) now: callers do this before any work, so
        that an unreachable or refusing cluster is an error at once, not after the first
        stage."""
        self._init()

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *,
            shared: dict[str, Any] | None = None, description: str = "units",
            progress: bool = False) -> list[Any]:
        items = list(items)
        if not items:
            return []
        ray = self._init()
        task = ray.remote(_call).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                         max_retries=self.max_retries, retry_exceptions=False)
        fn_ref = ray.put(fn)
        shared_ref = ray.put(shared or {})
        refs = [task.remote(fn_ref, item, shared_ref) for item in items]
        pending = list(refs)
        for _ in track(range(len(refs)), description=description, enabled=progress):
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])  # raise the first failure now, not after the whole pool
        return ray.get(refs)


def get_executor(executor: str | Executor | None = "local", *,
                 address: str | None = None) -> Executor:
    """An executor from its name (``"local"``, ``"ray"``) or an executor object itself.
    ``address`` (Ray only) is the cluster to join."""
    if executor is None:
        executor = "local"
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise AdvTransferError(f"executor must be one of {list(EXECUTORS)}; got "
                                   f"{executor!r}")
        if executor == "local":
            if address is not None:
                raise AdvTransferError("address is for executor='ray'; the local executor runs "
                                       "in this process")
            return LocalExecutor()
        return RayExecutor(address)
    if not callable(getattr(executor, "map", None)):
        raise AdvTransferTypeError(f"executor must be 'local', 'ray' or an object with a map() "
                                   f"method; got {type(executor).__name__}")
    return executor


def connect(executor: Executor) -> None:
    """Join ``executor``'s cluster now, when it has one (:meth:`RayExecutor.connect`): callers
    do this before any work, so that an unreachable cluster is an error at once. Executors
    without a ``connect`` method (this process, a user's own) have nothing to join."""
    join = getattr(executor, "connect", None)
    if callable(join):
        join()
