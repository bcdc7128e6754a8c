"""Progress for long loops (training epochs, fine-tuning, attacks over batches) and warnings.

On a terminal a rich progress bar (count, elapsed time, ETA); elsewhere (logs, CI, pipes) plain
lines on stderr, ``description done/total elapsed``, at most every :data:`PLAIN_INTERVAL_S`
seconds and once when the loop ends, so a long run is never silent and never prints blank bars.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
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

T = TypeVar("T")

#: Seconds between two plain progress lines of one loop when output is not a terminal.
PLAIN_INTERVAL_S = 10.0


def warn(message: str) -> None:
    """A one-line warning on stderr (``warning: message``)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


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
        print(f"{description} {count} {time.monotonic() - start:.1f}s", file=sys.stderr,
              flush=True)

    for item in iterable:
        yield item
        done += 1
        if time.monotonic() - last >= PLAIN_INTERVAL_S:
            last, shown = time.monotonic(), done
            line()
    if shown != done:
        line()
