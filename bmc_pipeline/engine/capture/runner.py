"""The long-running capture: read the change log, seal a segment every ``segment_seconds`` (and
when told to stop), then save the position.

Order of a seal: publish the segment (manifest last), then save the position that points past
its changes. A process killed between the two repeats those changes in its next segment; replay
is idempotent, so nothing is skipped and nothing changes twice.

Coverage. While the source is caught up (its last poll came back empty), every change up to the
moment that poll began is in hand; a seal extends the newest covered range to it. When capture
cannot resume (history lost), the range ends, a gap is recorded, an alert goes out once, and a
new full backup is requested; capture then continues from the oldest history left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from bmc_pipeline.engine.capture.changes import CapturedChange
from bmc_pipeline.engine.capture.segments import CaptureStore, CoveredRange, Gap, Position
from bmc_pipeline.engine.capture.sources import HistoryLost, Source
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.store import BackupStore

Log = Callable[[str], None]
Notify = Callable[[str, str], None]  # (alert key, message)
START_MARGIN = timedelta(minutes=5)
FULL_BATCH = 1000  # changes a poll returns when more are waiting  # capture starts this long before the newest full's read


def newest_full_watermark(
    store: BackupStore, keyring: KeyRing, collections: list[str]
) -> datetime | None:
    """Where a first capture starts: the oldest of the newest full backup's watermarks."""
    marks: list[datetime] = []
    for name in collections:
        for ref in reversed(store.refs(backup_type="full")):
            entry = store.load_manifest(ref, keyring).collections.get(name)
            if entry is not None and entry.watermark:
                marks.append(datetime.fromisoformat(entry.watermark))
                break
    return min(marks) if marks else None


@dataclass
class SealStats:
    """What one seal did."""

    segment: str | None
    changes: int
    until: datetime
    per_collection: dict[str, int] = field(default_factory=dict)


class CaptureRunner:
    """Capture from ``source`` into ``capture`` until :meth:`run`'s stop event is set: every
    collection of the database, so one added to the configuration later is covered already."""

    def __init__(
        self,
        capture: CaptureStore,
        source: Source,
        *,
        database: str,
        segment_seconds: float,
        log: Log,
        notify: Notify,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        on_seal: Callable[[SealStats], None] | None = None,
    ) -> None:
        self.capture, self.source = capture, source
        self.database = database
        self.segment_seconds = segment_seconds
        # after a short batch, before the next read: a sixth of the segment period (0.2 to 5 s)
        self.pause_s = min(5.0, max(0.2, segment_seconds / 6))
        self.log, self.notify, self.clock = log, notify, clock
        self.on_seal = on_seal  # after each seal that published a segment (the remote copy)
        self.pending: list[CapturedChange] = []
        self.position: Position | None = None
        self.caught_up_at: datetime | None = None
        self.sealed: list[SealStats] = []

    # -- starting -------------------------------------------------------------------------
    def start(self, start_at: datetime | None) -> Position:
        """Open the source where the saved position says (or at ``start_at`` the first time);
        record a gap if history was lost."""
        pos = self.capture.position()
        if pos is None:
            try:
                began = self.source.open(None, start_at)
            except HistoryLost:  # the log does not reach back to the newest full: from now on
                began = self.source.open(None, None)
            pos = Position(source=self.source.name, database=self.database,
                           ranges=[CoveredRange(start=began, until=began)])  # fmt: skip
            self.log(f"capture: first start, covering changes from {began.isoformat()}")
        else:
            try:
                self.source.open(pos.resume, None)
                self.log(f"capture: resuming after {pos.resume} (covered: {pos.describe_ranges()})")
            except HistoryLost as lost:
                pos = self._gap(pos, lost)
        pos.resume = self.source.resume_token() or pos.resume
        self.capture.save_position(pos)
        self.position = pos
        return pos

    def _gap(self, pos: Position, lost: HistoryLost) -> Position:
        after = pos.recoverable_until or lost.before
        began = self.source.open(None, lost.before)
        now = self.clock()
        gap = Gap(after=after, before=began, detected=now, reason=lost.reason)
        pos.gaps.append(gap)
        pos.ranges.append(CoveredRange(start=began, until=began))
        pos.full_requested = now
        message = (
            f"continuous capture lost history: changes between {after.isoformat()} and "
            f"{began.isoformat()} may be missing ({lost.reason}). No restore can reach a time in "
            "that gap; a new full backup is requested so times after it are recoverable again"
        )
        self.log(f"capture: {message}")
        self.notify("capture-gap", message)
        gap.alerted = True
        return pos

    # -- running --------------------------------------------------------------------------
    def poll(self, max_wait_s: float = 1.0) -> int:
        """One read from the source; returns how many changes it gave."""
        asked = self.clock()
        changes = self.source.poll(max_wait_s)
        self.pending.extend(changes)
        if self.source.caught_up:
            self.caught_up_at = asked  # everything written before this poll began is in hand
        return len(changes)

    def seal(self) -> SealStats:
        """Publish what is pending (if anything), then save the position past it."""
        pos = self.position
        assert pos is not None, "start() first"
        until = self.caught_up_at
        if until is None or (self.pending and until < max(c.at for c in self.pending)):
            # not caught up: only what is in hand is covered, to the last change read
            until = max([c.at for c in self.pending] + [pos.ranges[-1].until])
        stats = SealStats(None, len(self.pending), until)
        if self.pending:
            ref = self.capture.publish(
                self.pending, sealed=self.clock(), source=self.source.name, database=self.database
            )
            stats.segment = ref.name
            for c in self.pending:
                stats.per_collection[c.collection] = stats.per_collection.get(c.collection, 0) + 1
            pos.segments += 1
            pos.changes += len(self.pending)
        pos.resume = self.source.resume_token() or pos.resume
        pos.ranges[-1].until = max(pos.ranges[-1].until, until)
        self.capture.save_position(pos)
        self.pending = []
        self.caught_up_at = None
        self.sealed.append(stats)
        if stats.segment:
            self.log(f"capture: sealed {stats.segment} ({stats.changes} changes)")
            if self.on_seal is not None:
                self.on_seal(stats)
        return stats

    def run(self, stop: threading.Event, *, poll_wait_s: float = 1.0) -> None:
        """Poll and seal until ``stop`` is set; seal once more before returning."""
        next_seal = time.monotonic() + self.segment_seconds
        try:
            while not stop.is_set():
                try:
                    self.poll(min(poll_wait_s, max(0.05, next_seal - time.monotonic())))
                    if not self.source.behind:
                        # at the head of the log. Reading again at once only loads the server
                        # (FerretDB answers every read with a query of its whole oplog); a
                        # pause well inside the segment period costs no coverage
                        stop.wait(min(self.pause_s, max(0.0, next_seal - time.monotonic())))
                except HistoryLost as lost:
                    assert self.position is not None
                    self.seal()
                    self.position = self._gap(self.position, lost)
                    self.capture.save_position(self.position)
                if time.monotonic() >= next_seal:
                    self.seal()
                    next_seal = time.monotonic() + self.segment_seconds
            self.poll(0.05)  # what arrived since the last poll, then the final seal
            self.seal()
        finally:
            self.source.close()
