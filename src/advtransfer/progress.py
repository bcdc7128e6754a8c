"""Progress for long loops (training epochs, fine-tuning, attacks over batches) and warnings.

On a terminal a rich progress bar (count, elapsed time, ETA); elsewhere (logs, CI, pipes) plain
lines on stderr, ``description done/total elapsed``, at most every :data:`PLAIN_INTERVAL_S`
seconds and once when the loop ends, and around a whole run a :func:`heartbeat` line whenever
that long has passed without any, so a long run is never silent and never prints blank bars.

Warnings are Python warnings (:func:`warn` issues an :class:`AdvTransferWarning`): a library user
filters them with :mod:`warnings`; the command line shows every warning of a command, whatever
its category, as one plain line ``warning: message`` (:func:`one_line_warnings`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from advtransfer.errors import AdvTransferWarning

T = TypeVar("T")

#: Seconds between two plain progress lines of one loop when output is not a terminal.
PLAIN_INTERVAL_S = 10.0


#: time.monotonic() of the last plain line printed (progress, heartbeat or a warning shown by
#: :func:`one_line_warnings`)
_last_line = time.monotonic()


def _print_line(text: str) -> None:
    global _last_line
    print(text, file=sys.stderr, flush=True)
    _last_line = time.monotonic()


def warn(message: str) -> None:
    """Issue ``message`` as an :class:`AdvTransferWarning` attributed to the caller
    (``warnings.warn(message, AdvTransferWarning, stacklevel=2)``): Python's warning filters
    decide whether and how it shows; under :func:`one_line_warnings` (the command line) it is
    the line ``warning: message`` on stderr."""
    warnings.warn(message, AdvTransferWarning, stacklevel=2)


def _show_one_line(message: Warning | str, category: type[Warning], filename: str,
                   lineno: int, file: object = None, line: str | None = None) -> None:
    """A :func:`warnings.showwarning` replacement: ``warning: message`` on stderr, the message's
    whitespace runs (newlines included) collapsed to one space, with no category, file or line;
    it counts as a plain line for :func:`heartbeat`."""
    _print_line("warning: " + " ".join(str(message).split()))


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While the block runs, every warning that Python's filters let through, of any category
    (ours, the library's ``warnings.warn`` calls, those of torch and others), is shown as one
    line ``warning: message`` on stderr (:func:`_show_one_line`). The filters are not changed
    (``-W error`` and ``PYTHONWARNINGS`` still apply, a repeated warning from one place shows
    once); the previous display and filters are restored on exit
    (:class:`warnings.catch_warnings`)."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_one_line
        yield


@contextlib.contextmanager
def heartbeat(describe: Callable[[], str], *, enabled: bool = True,
              interval: float = PLAIN_INTERVAL_S) -> Iterator[None]:
    """While the block runs without a terminal, print ``describe() elapsed`` on stderr whenever
    ``interval`` seconds pass with no other plain line (a loop's progress, a warning), so that
    a long run is never silent, even inside one long step (a training, an attack). On a
    terminal the progress bars already show the elapsed time, and nothing is printed."""
    if not enabled or Console(stderr=True).is_terminal:
        yield
        return
    start, stop = time.monotonic(), threading.Event()

    def beat() -> None:
        while not stop.wait(min(1.0, interval / 4)):
            if time.monotonic() - _last_line >= interval:
                _print_line(f"{describe()} {time.monotonic() - start:.1f}s")

    _print_line(f"{describe()} 0.0s")
    thread = threading.Thread(target=beat, name="advtransfer-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def track(iterable: Iterable[T], *, description: str, total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """Iterate with progress when ``enabled``: a rich bar on a terminal, else plain lines."""
    if not enabled:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not Console().is_terminal:
        yield from _plain(iterable, description, total)
        return
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


def _plain(iterable: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    start = last = time.monotonic()
    done, shown = 0, -1

    def line() -> None:
        count = f"{done}/{total}" if total is not None else str(done)
        _print_line(f"{description} {count} {time.monotonic() - start:.1f}s")

    for item in iterable:
        yield item
        done += 1
        if time.monotonic() - last >= PLAIN_INTERVAL_S:
            last, shown = time.monotonic(), done
            line()
    if shown != done:
        line()
