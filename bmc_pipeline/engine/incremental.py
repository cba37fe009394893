"""What an incremental backup point stores: the documents that changed since its parent, the ids
that went, and the state digest carried forward. Nothing else: no index of the collection.

Three ways to find the changes, in the order a backup prefers them:

* **captured segments** (:func:`from_capture`): the changes continuous capture sealed since the
  parent; no read of the collection at all;
* **timestamps** (:func:`from_timestamps`): the documents whose timestamp field moved, then an
  ``_id``-only listing for deletions and for documents written without a timestamp;
* **content hashes** (:func:`from_scan`): every document read and hashed, for collections with
  no timestamp field.

The parent's ``_id -> hash`` map comes from its chain's archives (:func:`..restore.chain.point_state`),
a :class:`SpillMap`, so memory stays flat however large the collection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from bmc_pipeline.engine.archive import ArchiveWriter
from bmc_pipeline.engine.chain import DROPPED, Change, merge_newest_first
from bmc_pipeline.engine.digest import StateDigest, document_hash
from bmc_pipeline.engine.mongo import raw_batches
from bmc_pipeline.engine.rawbson import decode_id, id_document, id_element
from bmc_pipeline.engine.spillmap import SpillMap

Documents = Callable[[Iterable[bytes]], Iterator[bytes]]  # raw batches -> documents (throttled)


class Delta:
    """The archives of one incremental and the state they lead to.

    ``state`` starts as the parent's map and is kept current; ``digest`` starts as the parent's
    recorded digest and gains (loses) the hash of every version written (replaced or deleted).
    """

    def __init__(
        self,
        state: SpillMap,
        digest: StateDigest,
        documents: ArchiveWriter,
        tombstones: ArchiveWriter,
    ) -> None:
        self.state, self.digest = state, digest
        self.documents, self.tombstones = documents, tombstones
        self.added: list[bytes] = []  # ids the parent did not hold: checked for deletion too

    def put(self, raw: bytes) -> None:
        """Store ``raw`` unless the parent already holds exactly this version."""
        elem, h = id_element(raw), document_hash(raw)
        old = self.state.get(elem)
        if old == h:
            return
        self.documents.write_batch(raw)
        if old is None:
            self.added.append(elem)
        else:
            self.digest.remove_hash(old)
        self.digest.add_hash(h)
        self.state[elem] = h

    def delete(self, elem: bytes) -> None:
        """Record that ``elem`` went, if the state holds it."""
        old = self.state.pop(elem)
        if old is not None:
            self.tombstones.write_batch(id_document(elem))
            self.digest.remove_hash(old)

    def delete_absent(self, parent_ids: Iterator[bytes], present: Callable[[bytes], bool]) -> None:
        """Tombstones for every id of the parent (or added since) that is no longer present."""
        for elem in parent_ids:
            if not present(elem):
                self.delete(elem)
        for elem in self.added:
            if not present(elem):
                self.delete(elem)


def from_capture(
    delta: Delta, layers: list[Iterator[Change]], parent_ids: Callable[[], Iterator[bytes]]
) -> None:
    """Apply captured changes (newest layer first); reads nothing from the server. After a drop
    every id of the parent that no later change brought back is gone too."""
    docs, deleted = merge_newest_first(layers)
    kept = SpillMap()
    for raw in docs:
        delta.put(raw)
        kept[id_element(raw)] = b""
    for elem in deleted - {DROPPED}:
        delta.delete(elem)
    if DROPPED in deleted:
        delta.delete_absent(parent_ids(), kept.__contains__)
    kept.close()


def from_timestamps(
    delta: Delta,
    coll: Any,
    documents: Documents,
    *,
    ts_field: str,
    since: datetime,
    batch: int,
    parent_ids: Iterator[bytes],
) -> None:
    """Documents whose ``ts_field`` is at or after ``since``, documents the parent never saw,
    and tombstones for ids no longer listed."""
    written = SpillMap()
    for raw in documents(raw_batches(coll, {ts_field: {"$gte": since}}, batch_size=batch)):
        delta.put(raw)
        written[id_element(raw)] = b""
    current = SpillMap()
    unseen: list[bytes] = []  # listed, but neither in the parent nor written above
    for raw in documents(raw_batches(coll, None, {"_id": 1}, batch_size=batch * 10)):
        elem = id_element(raw)
        current[elem] = b""
        if elem not in delta.state and elem not in written:
            unseen.append(elem)
    written.close()
    for i in range(0, len(unseen), 1000):
        ids = [decode_id(e) for e in unseen[i : i + 1000]]
        for raw in documents(raw_batches(coll, {"_id": {"$in": ids}}, batch_size=batch)):
            delta.put(raw)
    delta.delete_absent(parent_ids, current.__contains__)
    current.close()


def from_scan(
    delta: Delta, coll: Any, documents: Documents, *, batch: int, parent_ids: Iterator[bytes]
) -> None:
    """Every document read and compared by content hash; tombstones for ids not read."""
    current = SpillMap()
    for raw in documents(raw_batches(coll, batch_size=batch)):
        delta.put(raw)
        current[id_element(raw)] = b""
    delta.delete_absent(parent_ids, current.__contains__)
    current.close()
