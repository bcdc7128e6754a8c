"""Where computations run: the one :func:`resolve_device` of the library, the command line and
the recipes (advtransfer never moves a model; it runs where the models are), and how many CPU
threads the command line uses (:func:`use_threads`, ``--threads``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import torch
from torch import nn

from advtransfer.errors import AdvTransferError

__all__ = ["choose_threads", "free_cores", "model_device", "resolve_device", "use_threads",
           "user_threads"]


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or None for a stateless model."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def resolve_device(models: Iterable[nn.Module] = (),
                   device: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    ``"auto"`` is the models' device (models are never moved), or CUDA when present for
    parameter-free models or no models at all (the command line's ``--device auto``), else the
    CPU. An explicit device (``"cpu"``, ``"cuda"``, ``"cuda:N"``, a ``torch.device``) must match
    the models' device and, for CUDA, be available.

    Raises:
        AdvTransferError: the models are on different devices, ``device`` is not a device,
            CUDA is asked for but absent, or the models are elsewhere.
    """
    devices = {d for d in (model_device(m) for m in models) if d is not None}
    if len(devices) > 1:
        raise AdvTransferError(f"the models are on different devices {sorted(map(str, devices))}; "
                               "move them to one device with model.to(device)")
    if isinstance(device, str) and device == "auto":
        if devices:
            return devices.pop()
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise AdvTransferError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (command "
                               f"line: --device); got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise AdvTransferError(f"device {str(device)!r} was asked for (command line: --device) "
                               "but no CUDA device is available")
    for d in devices:
        if d.type != target.type or (target.index is not None and d != target):
            raise AdvTransferError(f"device={str(device)!r} but the models are on {d}; "
                                   "advtransfer never moves models: call model.to(device) first")
    return target


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) CPU time of the machine since boot from /proc/stat, or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def free_cores(interval: float = 0.2) -> int:
    """The cores not busy with other work: the machine's idle share of CPU time over
    ``interval`` seconds (Linux ``/proc/stat``) times its cores, rounded, or, where that is not
    readable, the cores less the one-minute load average; at least 1, at most the cores this
    process may use."""
    usable, cores = _usable_cores(), os.cpu_count() or 1
    before = _cpu_times()
    if before is not None:
        time.sleep(interval)
        after = _cpu_times()
        assert after is not None
        total = after[1] - before[1]
        free = cores * (after[0] - before[0]) / total if total > 0 else cores
    elif hasattr(os, "getloadavg"):
        free = cores - os.getloadavg()[0]
    else:
        free = cores
    return int(min(usable, max(1, round(free))))


def user_threads() -> int | None:
    """The thread count the user set with ``OMP_NUM_THREADS`` (an integer >= 1), else None."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else None


def choose_threads(threads: int | str = "auto") -> int:
    """The torch thread count to use: ``threads`` itself (an int >= 1, or its text), or for
    ``"auto"`` the user's ``OMP_NUM_THREADS`` when set, else :func:`free_cores`.

    Why not torch's default (one thread per core): a thread whose core is taken by another
    process stalls every parallel region of the others, and the run slows down 10-40x on a busy
    machine (``benchmarks/bench_busy.py``); on an idle machine auto is torch's default.

    Raises:
        AdvTransferError: ``threads`` is neither ``"auto"`` nor an integer >= 1.
    """
    if isinstance(threads, str) and threads.strip().lower() == "auto":
        return user_threads() or free_cores()
    try:
        n = int(threads)
        if isinstance(threads, float) or isinstance(threads, bool) or n < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise AdvTransferError(f"threads (command line: --threads) must be 'auto' or an integer "
                               f">= 1; got {threads!r}") from None
    return n


def use_threads(threads: int | str = "auto") -> int:
    """Set torch's intra-op thread count to :func:`choose_threads` ``(threads)`` and return it
    (the command line's ``--threads``; the Python API leaves the count to the caller)."""
    n = choose_threads(threads)
    torch.set_num_threads(n)
    return n
