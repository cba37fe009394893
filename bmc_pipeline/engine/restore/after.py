"""What a restore left, so that its rollback can tell whether anyone changed it since.

A rollback replaces or deletes every document the restore wrote. If the application (or a
person) changed one of them after the restore, rolling back silently throws that change away: the
quotes a customer accepted at 9 a.m. would vanish with the restore of 3 a.m. So at the end of a
restore, for every document it inserted, replaced or deleted, the content hash of that document
as its verification read it back (or "absent") is recorded in an encrypted archive in the rollback point's directory
(:data:`AFTER_FILE`, beside the archives the manifest lists). Before rolling back, the same
documents are read again: any that differ are counted and named, and the rollback is refused
unless forced.

A rollback point without the record (one made before it existed, or by a restore that stopped
while writing) is rolled back without this check.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import bson

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.atomic import atomic_write
from bmc_pipeline.engine.bsonstream import bson_documents
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import document_hash
from bmc_pipeline.engine.errors import GuardedError, IntegrityError
from bmc_pipeline.engine.mongo import raw_batches
from bmc_pipeline.engine.rawbson import decode_id, id_element
from bmc_pipeline.engine.restore.plan import PlanFiles
from bmc_pipeline.engine.spillmap import SpillMap

AFTER_FILE = f".after{ARCHIVE_SUFFIX}"  # a collection's name cannot start with '.'
_SHOWN_IDS = 5

# target collection -> raw ``_id`` element -> SHA-256 of the document, or None if absent
AfterState = dict[str, dict[bytes, bytes | None]]


def touched(plan: PlanFiles) -> Iterator[bytes]:
    """The ``_id`` elements of every document a plan inserts, replaces or deletes."""
    for part in ("insert", "replace", "delete"):
        for raw in plan.read(part):
            yield id_element(raw)


def left(read_back: SpillMap, ids: Iterable[bytes]) -> Iterator[tuple[bytes, bytes | None]]:
    """What the restore left of ``ids``, from the collection its verification read back
    (streamed: a restore of millions records it without holding it)."""
    for elem in ids:
        yield elem, read_back.get(elem)


def current_hashes(coll: Any, ids: Iterable[bytes], batch: int) -> dict[bytes, bytes | None]:
    """The content hash of each document now in ``coll`` among ``ids`` (None: not there)."""
    out: dict[bytes, bytes | None] = {}
    pending: list[bytes] = []

    def fetch() -> None:
        for buf in raw_batches(coll, {"_id": {"$in": [decode_id(e) for e in pending]}}):
            for raw in bson_documents(buf):
                out[id_element(raw)] = document_hash(raw)
        pending.clear()

    for elem in ids:
        out.setdefault(elem, None)
        pending.append(elem)
        if len(pending) >= batch:
            fetch()
    if pending:
        fetch()
    return out


def record(
    settings: Settings,
    keyring: KeyRing,
    payload_dir: Path,
    rollback_id: str,
    state: Mapping[str, Iterable[tuple[bytes, bytes | None]]],
) -> None:
    """Write ``state`` (per target, pairs of id element and hash) into the rollback point's
    directory, encrypted and authenticated."""
    with atomic_write(payload_dir / AFTER_FILE, mode=settings.storage.file_mode) as fh:
        w = ArchiveWriter(
            fh,
            keyring,
            level=settings.compression.level,
            segment_size=settings.encryption.segment_size,
            name=AFTER_FILE,
        )
        w.write_document(bson.encode({"rollback_id": rollback_id}))
        for target, pairs in state.items():
            for elem, digest in pairs:
                w.write_document(bson.encode({"c": target, "i": elem, "h": digest}))
        w.close()


def load(keyring: KeyRing, payload_dir: Path, rollback_id: str) -> AfterState | None:
    """The recorded state, or None when this rollback point has none."""
    path = payload_dir / AFTER_FILE
    if not path.exists():
        return None
    state: AfterState = {}
    with path.open("rb") as fh:
        docs = (bson.decode(raw) for raw in ArchiveReader(fh, keyring, name=AFTER_FILE).documents())
        first = next(docs, {})
        if first.get("rollback_id") != rollback_id:
            raise IntegrityError(
                f"{AFTER_FILE} of {rollback_id} belongs to {first.get('rollback_id')!r}: it was "
                "copied from another rollback point; delete it to roll back without the check",
                path=str(path),
                reason="after-state-mismatch",
            )
        for d in docs:
            state.setdefault(d["c"], {})[bytes(d["i"])] = None if d["h"] is None else bytes(d["h"])
    return state


def changed_since(db: Any, state: AfterState, batch: int) -> dict[str, list[bytes]]:
    """Per collection, the ids of documents that differ from what the restore left."""
    out: dict[str, list[bytes]] = {}
    for target, recorded in state.items():
        now = current_hashes(db[target], recorded, batch)
        diff = [elem for elem, digest in recorded.items() if now.get(elem) != digest]
        if diff:
            out[target] = diff
    return out


def refuse_if_changed(db: Any, state: AfterState, rollback_id: str, batch: int) -> None:
    """:class:`GuardedError` naming how many documents changed since the restore, and which."""
    changed = changed_since(db, state, batch)
    if not changed:
        return
    parts = []
    for target, ids in changed.items():
        shown = ", ".join(repr(decode_id(e)) for e in ids[:_SHOWN_IDS])
        more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
        parts.append(f"{len(ids)} in {target} ({shown}{more})")
    total = sum(len(v) for v in changed.values())
    raise GuardedError(
        f"rollback {rollback_id} refused: {total} document(s) the restore wrote were changed "
        f"after it: {'; '.join(parts)}. Rolling back would throw those changes away. Export or "
        f"note them first, then roll back anyway with 'bmc-backup rollback {rollback_id} --force'"
    )
