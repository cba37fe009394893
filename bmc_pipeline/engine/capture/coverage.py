"""What the captured changes can give: an incremental without reading the collection, and a
restore to any second they cover.

Replay rule. A backup point reads a collection between its ``watermark`` (before the read) and
its ``read_until`` (after it). Every captured change from the watermark on, replayed over the
point's documents (puts as whole documents, deletes by id), gives the collection's exact state at
any time ``T`` at or after ``read_until``: a document changed between the watermark and ``T`` ends
as its last version at or before ``T``, and one not changed read the same then as at ``T``. So a
restore to ``T`` uses the newest backup point whose read ended at or before ``T`` and whose
watermark a covered range reaches, and replays the changes from (a margin before) its watermark
to ``T``. Replay starts ``CLOCK_MARGIN`` early: an earlier change is harmless, a missed one is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bmc_pipeline.engine.capture.changes import CapturedChange, as_merge_changes
from bmc_pipeline.engine.capture.segments import CaptureStore, Position, SegmentRef
from bmc_pipeline.engine.chain import BackupPoint, Change, resolve_chain
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BackupNotFoundError
from bmc_pipeline.engine.manifest import CollectionEntry
from bmc_pipeline.engine.store import BackupRef, BackupStore

CLOCK_MARGIN = timedelta(seconds=60)


def read_until(entry: CollectionEntry) -> datetime | None:
    """When a backup point's read of the collection ended (older manifests: watermark plus
    duration)."""
    if entry.read_until:
        return datetime.fromisoformat(entry.read_until)
    if entry.watermark is None:
        return None
    return datetime.fromisoformat(entry.watermark) + timedelta(seconds=entry.duration_s or 0)


class CapturedChanges:
    """The capture store of a backup store, read for incrementals and point-in-time restores."""

    def __init__(self, store: BackupStore, keyring: KeyRing) -> None:
        self.backups = store
        self.segments = CaptureStore(store, keyring)
        self.keyring = keyring

    def position(self) -> Position | None:
        return self.segments.position()

    def layers(self, collection: str, start: datetime, end: datetime) -> list[Iterator[Change]]:
        """The changes of ``collection`` from ``start`` to ``end``, one layer per segment, newest
        segment first and newest change first within each (the order a merge reads)."""

        def layer(seg: SegmentRef) -> Iterator[Change]:
            kept = [c for c in self.segments.changes(seg, collection) if start <= c.at <= end]
            yield from as_merge_changes(reversed(kept))

        segs = list(self.segments.iter_segments_between(start, end))
        return [layer(s) for s in reversed(segs)]

    def changes(self, collection: str, start: datetime, end: datetime) -> Iterator[CapturedChange]:
        """The same changes in capture order (for replay reports and tests)."""
        for seg in self.segments.iter_segments_between(start, end):
            for c in self.segments.changes(seg, collection):
                if start <= c.at <= end:
                    yield c

    def changes_since(
        self, collection: str, parent: CollectionEntry
    ) -> tuple[datetime, list[Iterator[Change]]] | None:
        """(the time the captured state reaches, its layers) when capture covers everything from
        the parent point's watermark to past the end of its read (the replay rule above); None
        when it does not (the incremental then reads the collection)."""
        pos = self.position()
        ended = read_until(parent)
        if pos is None or not pos.ranges or parent.watermark is None or ended is None:
            return None
        watermark = datetime.fromisoformat(parent.watermark)
        newest = pos.ranges[-1]
        if newest.start > watermark or newest.until < ended:
            return None
        return newest.until, self.layers(collection, watermark - CLOCK_MARGIN, newest.until)

    def base_for(
        self, collection: str, when: datetime
    ) -> tuple[BackupRef, list[Iterator[Change]], datetime] | None:
        """For a restore of ``collection`` at ``when``: (the backup point to start from, the
        changes to replay over it, the watermark replay starts at). None when nothing was ever
        captured or ``when`` is before capture began (the restore then uses the newest point at
        or before ``when``, as always); a refusal naming the covered ranges when ``when`` is after
        the newest captured second, in a gap, or in a range no backup point can start from."""
        pos = self.position()
        if pos is None or not pos.ranges:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        newest = pos.recoverable_until
        assert newest is not None
        if when > newest:
            raise BackupNotFoundError(
                f"{when.isoformat()} is after the newest recoverable time of {collection!r}, "
                f"{newest.isoformat()} (captured: {pos.describe_ranges()}); pick an earlier time, "
                "or check that capture is running ('bmc-backup status')"
            )
        if when < pos.ranges[0].start:
            return None  # before capture began: the backups alone, as always
        best: tuple[datetime, BackupRef, datetime] | None = None
        for ref in self.backups.refs():
            if ref.backup_type == "rollback" or ref.timestamp > when:
                continue
            entry = self.backups.load_manifest(ref, self.keyring).collections.get(collection)
            if entry is None or entry.watermark is None:
                continue
            ended = read_until(entry)
            watermark = datetime.fromisoformat(entry.watermark)
            if ended is None or ended > when or pos.covering(watermark, when) is None:
                continue
            if best is None or ended > best[0]:
                best = (ended, ref, watermark)
        if best is None:
            gaps = "; ".join(
                f"history lost between {g.after.isoformat()} and {g.before.isoformat()}"
                for g in pos.gaps
            )
            in_gap = any(g.after < when < g.before for g in pos.gaps)
            why = (
                "that time falls in a gap of continuous capture"
                if in_gap
                else "no backup point was taken while capture was running before that time, so "
                "no replay can reach it"
            )
            raise BackupNotFoundError(
                f"cannot restore {collection!r} to {when.isoformat()}: {why}. "
                f"Captured: {pos.describe_ranges()}"
                + (f"; {gaps}" if gaps else "")
                + ". Pick a time inside a captured range after a backup, or restore a backup "
                "point by its id"
            )
        _, ref, watermark = best
        return ref, self.layers(collection, watermark - CLOCK_MARGIN, when), watermark


def captured_changes(store: BackupStore, keyring: KeyRing) -> CapturedChanges | None:
    """The captured changes of ``store``, when capture has ever saved a position there."""
    captured = CapturedChanges(store, keyring)
    return captured if captured.segments.position_path.exists() else None


@dataclass
class RestoreSource:
    """What a restore of one collection reads: the backup points, the captured changes to
    replay over them (newest first), and, when there are any, what the report says of them."""

    points: list[BackupPoint]
    layers: list[Iterator[Change]]
    replay: dict[str, str] | None = None


def restore_source(
    store: BackupStore,
    keyring: KeyRing,
    backup_id: str,
    collection: str,
    when: datetime | None,
) -> RestoreSource:
    """The chain of ``backup_id`` (at ``when``, if given); where capture ran, the state at
    ``when`` exactly: a backup point and the changes up to that second (:meth:`base_for`)."""
    captured = captured_changes(store, keyring) if when else None
    replay = captured.base_for(collection, when) if captured and when else None
    if replay is None:
        return RestoreSource(resolve_chain(store, keyring, backup_id, collection, when), [])
    assert when is not None
    base, layers, since = replay
    points = resolve_chain(store, keyring, base.backup_id, collection)
    info = {"to": when.isoformat(), "base": base.backup_id, "since": since.isoformat()}
    return RestoreSource(points, layers, info)


def summed(docs: Iterator[bytes], digest: StateDigest) -> Iterator[bytes]:
    """``docs`` unchanged, each added to ``digest`` as it passes."""
    for raw in docs:
        digest.add(raw)
        yield raw
