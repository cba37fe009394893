"""Replay without a server process: segments written through the capture store over a backup in
mongomock; incrementals from segments and restores to a second, drops included."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import bson
import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.capture.changes import CapturedChange
from bmc_pipeline.engine.capture.segments import CaptureStore, CoveredRange, Position
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.errors import BackupNotFoundError
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters, RestoreOptions
from bmc_pipeline.engine.store import BackupStore

COLL = "quotes"


def doc(i: int, v: int = 0) -> dict[str, Any]:
    return {"_id": i, "quote_id": f"Q-{i}", "session_id": f"s{i}", "items": [], "v": v}


@pytest.fixture
def base(
    mock_settings: Settings, mock_db: Any, key: Key
) -> tuple[Settings, Any, KeyRing, datetime]:
    mock_db[COLL].insert_many([doc(i) for i in range(10)])
    ring = KeyRing([key])
    full = BackupEngine(mock_settings, mock_db, BackupStore(mock_settings.backup_dir), ring).run(
        "full", [COLL], include_files=False
    )
    entry = full.manifest.collections[COLL]
    assert entry.read_until is not None
    return mock_settings, mock_db, ring, datetime.fromisoformat(entry.read_until)


def capture(
    s: Settings, ring: KeyRing, start: datetime, until: datetime, *changes: CapturedChange
) -> None:
    store = CaptureStore(BackupStore(s.backup_dir), ring)
    store.publish(list(changes), sealed=until)
    store.save_position(
        Position(source="oplog", database="db", ranges=[CoveredRange(start=start, until=until)])
    )


def put(at: datetime, d: dict[str, Any]) -> CapturedChange:
    return CapturedChange.put(COLL, at, bson.encode(d))


def restore_at(s: Settings, db: Any, ring: KeyRing, when: datetime, target: str) -> Any:
    engine = RestoreEngine(s, db, BackupStore(s.backup_dir), ring)
    return engine.run(RestoreOptions(collection=COLL, target_collection=target,
                                     filters=RestoreFilters(point_in_time=when)))  # fmt: skip


def state(db: Any, name: str) -> dict[Any, Any]:
    return {d["_id"]: d["v"] for d in db[name].find()}


def test_replay_to_each_second_and_an_incremental_that_reads_nothing(
    base: tuple[Settings, Any, KeyRing, datetime],
) -> None:
    s, db, ring, t0 = base
    s1, s2, s3 = (t0 + timedelta(seconds=k) for k in (1, 2, 3))
    capture(
        s, ring, t0 - timedelta(minutes=10), s3 + timedelta(seconds=1),
        put(s1, doc(1, 1)), CapturedChange.delete(COLL, s1, bson.encode({"_id": 2})),
        put(s2, doc(20, 1)), put(s2, doc(1, 2)),
        put(s3, doc(1, 3)), CapturedChange.delete(COLL, s3, bson.encode({"_id": 20})),
    )  # fmt: skip
    at_s1 = restore_at(s, db, ring, s1, "at_s1")
    assert at_s1.verified and at_s1.replay is not None, at_s1.verification
    assert state(db, "at_s1") == {**{i: 0 for i in range(10) if i != 2}, 1: 1}
    restore_at(s, db, ring, s2 + timedelta(milliseconds=500), "at_s2")
    assert state(db, "at_s2") == {**{i: 0 for i in range(10) if i != 2}, 1: 2, 20: 1}
    restore_at(s, db, ring, s3, "at_s3")
    assert state(db, "at_s3") == {**{i: 0 for i in range(10) if i != 2}, 1: 3}

    inc = BackupEngine(s, db, BackupStore(s.backup_dir), ring).run(
        "incremental", [COLL], include_files=False
    )
    entry = inc.manifest.collections[COLL]
    assert entry.change_detection == "capture"
    assert (entry.documents.documents, entry.tombstones.documents if entry.tombstones else 0) == (
        1,
        1,
    )
    assert inc.collections[COLL].state.count == 9
    report = RestoreEngine(s, db, BackupStore(s.backup_dir), ring).restore(
        inc.backup_id, COLL, target_collection="from_inc"
    )
    assert report.verified, report.verification  # the digest carried forward without a scan
    assert state(db, "from_inc") == state(db, "at_s3")


def test_a_drop_leaves_only_what_came_after(base: tuple[Settings, Any, KeyRing, datetime]) -> None:
    s, db, ring, t0 = base
    s1, s2 = t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)
    capture(s, ring, t0 - timedelta(minutes=10), s2,
            CapturedChange.drop(COLL, s1), put(s2, doc(100, 7)))  # fmt: skip
    restore_at(s, db, ring, s2, "after_drop")
    assert state(db, "after_drop") == {100: 7}
    inc = BackupEngine(s, db, BackupStore(s.backup_dir), ring).run(
        "incremental", [COLL], include_files=False
    )
    assert inc.collections[COLL].state.count == 1
    report = RestoreEngine(s, db, BackupStore(s.backup_dir), ring).restore(
        inc.backup_id, COLL, target_collection="inc_after_drop"
    )
    assert report.verified and state(db, "inc_after_drop") == {100: 7}


def test_capture_that_began_after_the_backup_cannot_replay_it(
    base: tuple[Settings, Any, KeyRing, datetime],
) -> None:
    s, db, ring, t0 = base
    later = t0 + timedelta(minutes=5)
    capture(s, ring, later, later + timedelta(seconds=5), put(later, doc(1, 9)))
    with pytest.raises(BackupNotFoundError, match="no backup point was taken while capture"):
        restore_at(s, db, ring, later + timedelta(seconds=2), "nope")
    # before capture began, a point in time means what it always did: the newest backup point
    before = restore_at(s, db, ring, t0 + timedelta(seconds=1), "before_capture")
    assert before.replay is None and before.verified
    assert state(db, "before_capture") == {i: 0 for i in range(10)}
    # and the next incremental reads the collection instead of trusting segments
    inc = BackupEngine(s, db, BackupStore(s.backup_dir), ring).run(
        "incremental", [COLL], include_files=False
    )
    assert inc.manifest.collections[COLL].change_detection != "capture"
