"""A read budget: at most N MiB/s from the database, so a backup does not starve the chatbot.

The chatbot and the backup share one server. Reading a collection as fast as the server can send
it takes disk and CPU the chatbot's own queries need; with ``mongodb.max_read_mb_per_s`` the
backup sleeps between batches whenever it is ahead of that rate (measured since the backup
started), so its load is bounded and its duration grows instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Spend bytes; sleep whenever the total is ahead of ``mb_per_s`` since the first spend."""

    def __init__(
        self,
        mb_per_s: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = mb_per_s * 1024 * 1024 if mb_per_s else None
        self.clock, self.sleep = clock, sleep
        self.started: float | None = None
        self.total = 0
        self.slept_s = 0.0

    def spend(self, nbytes: int) -> None:
        if self.rate is None:
            return
        now = self.clock()
        if self.started is None:
            self.started = now
        self.total += nbytes
        ahead = self.total / self.rate - (now - self.started)
        if ahead > 0:
            self.sleep(ahead)
            self.slept_s += ahead
