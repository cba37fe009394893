"""Progress of long work for people: a bar on a terminal, a line per tenth elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


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
