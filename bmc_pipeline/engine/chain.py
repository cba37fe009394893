"""Which backup points a restore (or an incremental) reads: the full and the incrementals up to the
chosen point, and the state they give, merged newest first.

A chain is resolved from a backup id, ``latest``, or a point in time (the newest point at or
before it, within the named backup's family when an id is given). Every archive of the chain is
authenticated before anything is written, and the documents of the chosen point's state are
streamed newest archive first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import document_hash
from bmc_pipeline.engine.errors import BackupNotFoundError
from bmc_pipeline.engine.manifest import PARTS, CollectionEntry, Manifest
from bmc_pipeline.engine.rawbson import id_element
from bmc_pipeline.engine.spillmap import SpillMap
from bmc_pipeline.engine.store import BackupRef, BackupStore
from bmc_pipeline.engine.validate import verify_archive


@dataclass
class BackupPoint:
    """One collection's entry in one published backup."""

    ref: BackupRef
    manifest: Manifest
    entry: CollectionEntry

    def path(self, part: str) -> Path:
        archive = self.entry.archive(part)
        assert archive is not None, part
        return self.ref.manifest_path.parent / archive.file

    def documents(self, part: str, keyring: KeyRing) -> Iterator[bytes]:
        """The raw BSON documents of one part (``documents``, ``tombstones``, ``index``)."""
        archive = self.entry.archive(part)
        declared = archive.raw_bytes if archive is not None else None
        with self.path(part).open("rb") as fh:
            yield from ArchiveReader(fh, keyring, declared_raw=declared).documents()


def _point_at(
    store: BackupStore,
    keyring: KeyRing,
    backup_id: str,
    collection: str,
    point_in_time: datetime,
) -> tuple[BackupRef, Manifest]:
    """The newest backup of ``collection`` taken at or before ``point_in_time``."""
    candidates = []
    for ref in store.refs():
        if ref.backup_type == "rollback":
            continue
        m = store.load_manifest(ref, keyring)
        if collection in m.collections and m.taken <= point_in_time:
            candidates.append((m.taken, ref, m))
    if backup_id != "latest":
        # The id names a chain; the point in time picks the point within it: the named
        # backup's ancestors and every backup descending from them, however deep.
        family = {p.ref.backup_id for p in resolve_chain(store, keyring, backup_id, collection)}
        for _, ref_, m in sorted(candidates, key=lambda c: c[0]):
            if m.collections[collection].parent in family:
                family.add(ref_.backup_id)
        candidates = [c for c in candidates if c[1].backup_id in family]
    if not candidates:
        raise BackupNotFoundError(
            f"no backup of collection {collection!r} at or before {point_in_time.isoformat()}"
        )
    _, ref, manifest = max(candidates, key=lambda c: c[0])
    return ref, manifest


def resolve_chain(
    store: BackupStore,
    keyring: KeyRing,
    backup_id: str,
    collection: str,
    point_in_time: datetime | None = None,
) -> list[BackupPoint]:
    """The full and incrementals (oldest first) whose application gives the chosen point."""
    if point_in_time is not None:
        ref, manifest = _point_at(store, keyring, backup_id, collection, point_in_time)
    elif backup_id == "latest":
        found = store.latest_with(collection, keyring)
        if found is None:
            raise BackupNotFoundError(f"there is no backup of collection {collection!r} yet")
        ref, manifest = found
    else:
        ref = store.resolve(backup_id)
        manifest = store.load_manifest(ref, keyring)
    points: list[BackupPoint] = []
    while True:
        colls = manifest.collections
        if collection not in colls:
            raise BackupNotFoundError(
                f"backup {ref.backup_id} holds no collection {collection!r}; "
                f"it holds: {', '.join(sorted(colls)) or 'none'}"
            )
        entry = colls[collection]
        points.append(BackupPoint(ref, manifest, entry))
        parent = entry.parent
        if not parent:
            break
        try:
            ref = store.resolve(parent)
        except BackupNotFoundError:
            raise BackupNotFoundError(
                f"backup {points[-1].ref.backup_id} is an incremental whose parent {parent} is "
                f"missing: the chain for {collection!r} is broken; restore from a full backup"
            ) from None
        manifest = store.load_manifest(ref, keyring)
    return list(reversed(points))


def verify_chain(points: list[BackupPoint], keyring: KeyRing) -> None:
    """Authenticate every archive the restore will read, before anything is written."""
    for p in points:
        for part in PARTS:
            archive = p.entry.archive(part)
            if archive is not None:
                label = f"backup {p.ref.backup_id}: {archive.file}"
                verify_archive(p.path(part), archive, keyring, label)


Change = tuple[bytes, "bytes | None"]  # (id element, raw document, or None for a deletion)
DROPPED = b""  # the id of a change that dropped the collection: nothing older counts


def point_changes(point: BackupPoint, keyring: KeyRing) -> Iterator[Change]:
    """One backup point as changes, in the order a newest-first merge must see them: its
    tombstones before its documents, because an incremental can list a document that was deleted
    while it was being taken (the id listing after the document scan no longer saw it)."""
    if point.entry.tombstones is not None:
        for raw in point.documents("tombstones", keyring):
            yield id_element(raw), None
    for raw in point.documents("documents", keyring):
        yield id_element(raw), raw


def merge_newest_first(
    layers: list[Iterator[Change]], spill_dir: Path | None = None, *, oldest_unique: bool = False
) -> tuple[Iterator[bytes], set[bytes]]:
    """The documents of a state built from layers of changes, newest layer first, and the ids
    a layer deleted that no newer layer brought back.

    The first change seen for an id decides it: a document is the id's version in the state, a
    deletion means it is absent. So no layer needs an index of the whole collection. The ids
    already decided are a :class:`SpillMap` in ``spill_dir`` (flat memory). With
    ``oldest_unique`` (the oldest layer is a full backup: each id once) that layer's ids are only
    looked up, never added. The deleted set is complete
    once the documents are exhausted. A drop (:data:`DROPPED`) ends the merge: the state holds
    only what newer changes brought, and the deleted set then holds :data:`DROPPED` too.
    """
    deleted: set[bytes] = set()

    def docs() -> Iterator[bytes]:
        seen = SpillMap(directory=spill_dir)
        try:
            for n, layer in enumerate(layers):
                oldest = oldest_unique and n == len(layers) - 1
                for elem, raw in layer:
                    if elem == DROPPED:
                        deleted.add(DROPPED)  # tells the caller everything older is gone
                        return
                    if elem in seen:
                        continue
                    if not oldest:
                        seen[elem] = b""
                    if raw is None:
                        deleted.add(elem)
                    else:
                        yield raw
        finally:
            seen.close()

    return docs(), deleted


def point_documents(
    points: list[BackupPoint],
    keyring: KeyRing,
    spill_dir: Path | None = None,
    newer: list[Iterator[Change]] | None = None,
) -> tuple[Iterator[bytes], set[bytes]]:
    """(documents of the final state, ids the chain deleted that the state does not hold).

    ``newer`` are layers of captured changes after the chain's last point (newest first), for a
    restore to a point in time between backups. The deleted set is complete once the documents
    are exhausted.
    """
    layers = list(newer or []) + [point_changes(p, keyring) for p in reversed(points)]
    # a chain starts at a full backup, which holds each id once
    return merge_newest_first(layers, spill_dir, oldest_unique=points[0].entry.parent is None)


def point_state(
    points: list[BackupPoint], keyring: KeyRing, spill_dir: Path | None = None
) -> SpillMap:
    """id -> content hash of every document of the chain's final state, rebuilt from the
    archives (backups keep no index of the whole collection)."""
    state = SpillMap(directory=spill_dir)
    docs, _ = point_documents(points, keyring, spill_dir)
    for raw in docs:
        state[id_element(raw)] = document_hash(raw)
    return state


def collections_at(
    store: BackupStore, keyring: KeyRing, backup_id: str, point_in_time: datetime | None = None
) -> list[str]:
    """The collections a whole restore brings back: those the named backup holds; for ``latest``
    every collection any backup holds; at a point in time, those backed up at or before it."""
    if backup_id != "latest" and point_in_time is None:
        return sorted(store.load_manifest(store.resolve(backup_id), keyring).collections)
    names: set[str] = set()
    for ref in store.refs():
        if ref.backup_type == "rollback":
            continue
        m = store.load_manifest(ref, keyring)
        if point_in_time is None or m.taken <= point_in_time:
            names.update(m.collections)
    if not names:
        when = f" at or before {point_in_time.isoformat()}" if point_in_time else ""
        raise BackupNotFoundError(f"no backup of any collection{when} in {store.root}")
    return sorted(names)
