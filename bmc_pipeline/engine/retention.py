"""Which backups to keep: daily / weekly / monthly rules with restic ``forget`` semantics, and guards.

Each rule keeps, for the N most recent calendar days (ISO weeks, months) that have a backup, the
newest backup of that day (week, month). A backup is kept if any rule keeps it. Then the guards:

* for every collection, the newest full backup holding it is always kept;
* a backup that a kept incremental depends on (its parent, for any collection, and so on up the
  chain) is kept, so every kept backup can still be restored;
* rollback points are not subject to retention (they are kept).

Everything else is deleted, manifest first (so a half-deleted backup is no longer listed). File
blobs that no kept backup references are deleted once they are older than a grace period, so a
backup being written right now never loses a blob it has just stored.
"""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError, GuardedError
from bmc_pipeline.engine.files import BLOB_DIR
from bmc_pipeline.engine.manifest import BLOB_NAME
from bmc_pipeline.engine.remote import RemoteStore
from bmc_pipeline.engine.store import BackupRef, BackupStore

SEGMENT_MARGIN = timedelta(hours=1)  # kept before the oldest backup a replay can start from


@dataclass(frozen=True)
class RetentionPolicy:
    daily: int = 30
    weekly: int = 12
    monthly: int = 12


@dataclass(frozen=True)
class Point:
    """What retention needs to know of a backup."""

    backup_id: str
    backup_type: str
    taken: datetime
    parents: frozenset[str]
    collections: frozenset[str] = frozenset()


@dataclass
class Decision:
    backup_id: str
    backup_type: str
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


def _buckets(t: datetime) -> dict[str, Any]:
    iso = t.isocalendar()
    return {"daily": t.date(), "weekly": (iso[0], iso[1]), "monthly": (t.year, t.month)}


def _label(rule: str, bucket: Any) -> str:
    if isinstance(bucket, date):
        return f"daily {bucket.isoformat()}"
    if rule == "weekly":
        return f"weekly {bucket[0]}-W{bucket[1]:02d}"
    return f"monthly {bucket[0]}-{bucket[1]:02d}"


def plan_retention(points: list[Point], policy: RetentionPolicy) -> list[Decision]:
    """The decision for every point, newest first."""
    newest_first = sorted(points, key=lambda p: (p.taken, p.backup_id), reverse=True)
    decisions = {p.backup_id: Decision(p.backup_id, p.backup_type) for p in newest_first}

    def keep(bid: str, reason: str) -> None:
        d = decisions[bid]
        d.keep = True
        if reason not in d.reasons:
            d.reasons.append(reason)

    subject = [p for p in newest_first if p.backup_type in ("full", "incremental")]
    for rule, n in (
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ):
        seen: set[Any] = set()
        for p in subject:
            bucket = _buckets(p.taken)[rule]
            if bucket in seen:
                continue
            if len(seen) >= n:
                break
            seen.add(bucket)
            keep(p.backup_id, _label(rule, bucket))
    for p in newest_first:
        if p.backup_type == "rollback":
            keep(p.backup_id, "rollback point (not subject to retention)")
    guarded: set[str] = set()
    for p in subject:  # newest first
        if p.backup_type == "full":
            for c in sorted(p.collections - guarded):
                keep(p.backup_id, f"newest full backup of {c}")
            guarded |= p.collections
    # chain guard, to a fixed point: a kept backup's parents are kept
    by_id = {p.backup_id: p for p in newest_first}
    stack = [bid for bid, d in decisions.items() if d.keep]
    while stack:
        child = stack.pop()
        for parent in by_id[child].parents:
            if parent in decisions:
                was = decisions[parent].keep
                keep(parent, f"needed by {child}")
                if not was:
                    stack.append(parent)
    return list(decisions.values())


def points_of(store: BackupStore, keyring: KeyRing) -> tuple[list[Point], list[str]]:
    """The store's backups as retention points, from authenticated manifests only.

    A backup whose manifest cannot be read or authenticated is left alone (listed as such):
    retention never deletes on the word of a manifest it cannot trust.
    """
    points, unreadable = [], []
    for ref in store.refs():
        try:
            m = store.load_manifest(ref, keyring)
            colls = m.collections
            parents = frozenset(c.parent for c in colls.values() if c.parent)
            taken = m.taken
        except (BmcError, KeyError, ValueError, TypeError) as exc:
            unreadable.append(f"{ref.backup_id}: {exc}")
            continue
        points.append(Point(ref.backup_id, ref.backup_type, taken, parents, frozenset(colls)))
    return points, unreadable


def referenced_blobs(store: BackupStore, refs: list[BackupRef], keyring: KeyRing) -> set[str]:
    blobs: set[str] = set()
    for ref in refs:
        m = store.load_manifest(ref, keyring)
        blobs.update(m.blobs())
    return blobs


@dataclass
class RotationResult:
    decisions: list[Decision]
    deleted: list[str]
    blobs_deleted: int
    blob_bytes_freed: int
    leftovers_removed: list[str]
    unreadable: list[str]
    dry_run: bool
    stray: list[str] = field(default_factory=list)  # entries in blobs/ that are not blobs
    # deleted here but kept at the remote, whose Object Lock has not expired: id -> until
    remote_locked: dict[str, str] = field(default_factory=dict)
    segments_deleted: int = 0  # capture segments older than any backup a replay could start from

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "kept": [d.__dict__ for d in self.decisions if d.keep],
            "deleted": self.deleted,
            "blobs_deleted": self.blobs_deleted,
            "blob_bytes_freed": self.blob_bytes_freed,
            "leftovers_removed": self.leftovers_removed,
            "unreadable_kept": self.unreadable,
            "stray_left_alone": self.stray,
            "kept_at_remote_until": self.remote_locked,
            "capture_segments_deleted": self.segments_deleted,
        }


def rotate(
    store: BackupStore,
    keyring: KeyRing,
    policy: RetentionPolicy,
    *,
    dry_run: bool,
    grace_s: float = 86_400.0,
    log: Callable[[str], None] = lambda _: None,
    remote: RemoteStore | None = None,
) -> RotationResult:
    """Apply the policy: delete what no rule or guard keeps (nothing at all in a dry run).

    With a ``remote``, the remote copies of deleted backups and blobs go too, so the two stores
    keep the same set of backups.
    """
    points, unreadable = points_of(store, keyring)
    decisions = plan_retention(points, policy)
    doomed = [d.backup_id for d in decisions if not d.keep]
    kept_refs = [store.ref(d.backup_id) for d in decisions if d.keep]
    cutoff = time.time() - grace_s
    unused: list[tuple[Path, int]] = []
    stray: list[str] = []
    # blobs: only when every manifest could be read (an unreadable one may reference any blob),
    # and never one younger than the grace period (a backup in progress may have just stored it)
    if not unreadable and (store.root / BLOB_DIR).is_dir():
        keep_blobs = referenced_blobs(store, kept_refs, keyring)
        for p in (store.root / BLOB_DIR).glob("*/*"):
            st = p.lstat()  # a link is never followed, nor deleted as if it were a blob
            if not stat.S_ISREG(st.st_mode) or not BLOB_NAME.fullmatch(p.name):
                if not p.name.startswith(".tmp-"):  # a blob being written
                    stray.append(str(p.relative_to(store.root)))
                continue
            if p.name not in keep_blobs and st.st_mtime < cutoff:
                unused.append((p, st.st_size))
    leftovers = store.stale_leftovers()  # a writer that is still alive holds its lock
    # a replay starts at a kept backup's watermark: segments ending well before the oldest one
    # can never be read again (none are pruned while a manifest is unreadable)
    kept_backups = [r.timestamp for r in kept_refs if r.backup_type != "rollback"]
    old_segments = (
        CaptureStore(store, keyring).segments_before(min(kept_backups) - SEGMENT_MARGIN)
        if kept_backups and not unreadable
        else []
    )
    locked: dict[str, str] = {}
    if not dry_run:
        for bid in doomed:
            log(f"deleting backup {bid}")
            until = remote.backup_locked_until(store, bid) if remote is not None else None
            store.delete(store.ref(bid))
            if remote is not None and until is not None:
                log(f"{bid} stays at {remote.url} until {until.isoformat()} (Object Lock)")
                locked[bid] = until.isoformat()
            elif remote is not None:
                remote.delete(store, bid)
        for p, _ in unused:
            p.unlink(missing_ok=True)
        if remote is not None and unused:
            remote.delete_blobs(store, [p.name for p, _ in unused])
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        for seg in old_segments:
            CaptureStore(store, keyring).remove(seg)
    return RotationResult(
        decisions=decisions,
        deleted=doomed,
        blobs_deleted=len(unused),
        blob_bytes_freed=sum(n for _, n in unused),
        leftovers_removed=[str(p) for p in leftovers],
        unreadable=unreadable,
        dry_run=dry_run,
        stray=stray,
        remote_locked=locked,
        segments_deleted=len(old_segments),
    )


def deletion_guards(store: BackupStore, keyring: KeyRing, backup_id: str) -> list[str]:
    """Why ``backup_id`` must not be deleted by hand; empty when it may be.

    The same guards as rotation, without the daily/weekly/monthly rules (the person asking has
    decided about those): the newest full backup of a collection, a rollback point, and any
    backup another backup's chain needs. A store with a manifest that cannot be authenticated
    refuses too, since that backup might depend on this one.
    """
    points, unreadable = points_of(store, keyring)
    by_id = {p.backup_id: p for p in points}
    if backup_id not in by_id:
        store.resolve(backup_id)  # raises "not found" for a backup that is not there
        return [f"its manifest cannot be authenticated ({'; '.join(unreadable)})"]
    reasons = []
    for d in plan_retention(points, RetentionPolicy(daily=0, weekly=0, monthly=0)):
        if d.backup_id == backup_id and d.keep:
            reasons += [r for r in d.reasons if not r.startswith("needed by")]
    reasons += [f"needed by {p.backup_id}" for p in points if backup_id in p.parents]
    if unreadable:
        reasons.append(
            f"{len(unreadable)} other manifest(s) cannot be authenticated, so whether they need "
            "it is unknown"
        )
    return reasons


def delete_backup(
    store: BackupStore, keyring: KeyRing, backup_id: str, remote: RemoteStore | None = None
) -> dict[str, Any]:
    """Delete one backup (and its remote copy) unless a guard forbids it (then nothing is done)."""
    ref = store.resolve(backup_id)
    reasons = deletion_guards(store, keyring, ref.backup_id)
    until = remote.backup_locked_until(store, ref.backup_id) if remote is not None else None
    if until is not None:  # refused before anything is deleted, here or there
        reasons.append(
            f"its copy at {remote.url if remote else ''} is under S3 Object Lock until "
            f"{until.isoformat()}"
        )
    if reasons:
        raise GuardedError(
            f"backup {ref.backup_id} is not deleted: {'; '.join(reasons)}. Retention "
            "('bmc-backup rotate') removes it once nothing needs it"
        )
    store.delete(ref)
    if remote is not None:
        remote.delete(store, ref.backup_id)
    return {"backup_id": ref.backup_id, "deleted": True}
