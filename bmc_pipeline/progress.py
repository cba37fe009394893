"""Progress of long work for people: a bar on a terminal, a line per tenth elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Log = Callable[[str], None]

# Where a run executing in this process also shows its progress: the terminal of the command
# that launched it (None for the UI's, the schedules' and the API's runs: the run log is theirs).
_TERMINAL: ContextVar[Log | None] = ContextVar("bmc_terminal", default=None)


@contextmanager
def shown_on(echo: Log | None) -> Iterator[None]:
    """While the ``with`` body runs a Dagster run in this thread, :func:`run_log` also echoes."""
    token = _TERMINAL.set(echo)
    try:
        yield
    finally:
        _TERMINAL.reset(token)


def run_log(log: Log) -> Log:
    """A run's log (``context.log.info``) that also reaches the launching terminal, if any.

    The command line runs its restores and scans as in-process Dagster runs (so they are in the
    run history); their progress lines still appear where the person typed the command.
    """
    echo = _TERMINAL.get()
    if echo is None:
        return log

    def both(msg: str) -> None:
        log(msg)
        echo(msg)

    return both


class ProgressBar:
    """Told ``(done, total)`` in bytes; shows how far, how much and how fast.

    On a terminal the bar is redrawn in place; written to a log file, a pipe or ``emit`` (the
    Dagster run log), one line per tenth, so a log is not flooded and still shows the work move.
    """

    WIDTH = 30

    def __init__(
        self, what: str, *, emit: Callable[[str], None] | None = None, stream: Any = None
    ) -> None:
        self.what = what
        self.emit = emit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = emit is None and bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.tenths_shown = 0

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        share = min(done / total, 1.0)
        rate = done / 1e6 / max(time.monotonic() - self.started, 1e-6)
        text = (
            f"{self.what} {share:4.0%}  {done / 1e6:,.1f} of {total / 1e6:,.1f} MB  "
            f"{rate:,.1f} MB/s"
        )
        if self.tty:
            filled = int(share * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            end = "\n" if done >= total else ""
            print(f"\r... [{bar}] {text}", end=end, file=self.stream, flush=True)
        elif int(share * 10) > self.tenths_shown:
            self.tenths_shown = int(share * 10)
            if self.emit is not None:
                self.emit(text)
            else:
                print(f"... {text}", file=self.stream, flush=True)
