"""Progress of a scan: workers count the bytes they read into a counter the main process shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


Progress = Callable[[int, int], None]


"""Told (bytes of files read, bytes of files to read) now and then during a scan."""


# Bytes read by this process's scan work: a counter shared with the main process, set in each
# worker by worker_start; when the main process reads files itself, the thread doing so has
# its own (a process may run several scans, from the API's threads).
_READ: Any = None


LOCAL_COUNTER = threading.local()


def count_read(n: int) -> None:
    in_process = getattr(LOCAL_COUNTER, "reporter", None)
    counter = in_process.counter if in_process is not None else _READ
    if counter is not None and n > 0:
        with counter.get_lock():
            counter.value += n
        if in_process is not None:
            in_process.tick()


def worker_start(counter: Any) -> None:
    """Runs in each worker as it starts: progress goes to the main process's counter."""
    global _READ
    _READ = counter


class ProgressReporter:
    """Calls ``progress`` at most twice a second, and once at the end."""

    INTERVAL_S = 0.5

    def __init__(self, progress: Progress | None, counter: Any, total: int) -> None:
        self.progress, self.counter, self.total = progress, counter, total
        self._last = 0.0

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (final or now - self._last >= self.INTERVAL_S):
            self._last = now
            done = self.total if final else min(self.counter.value, self.total)
            self.progress(done, self.total)
