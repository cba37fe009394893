"""Restores against a real server: the seed's six scenarios and the harder ones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import ObjectId

from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import DevServer
from bmc_pipeline.engine import spillmap
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BmcError, DatabaseError, IntegrityError, PartialRestoreError
from bmc_pipeline.engine.mongo import connect, raw_batches
from bmc_pipeline.engine.quarantine import read_quarantine
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters
from bmc_pipeline.engine.restore.merge import merge_documents
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.store import BackupStore
from tests.support import make_settings

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True, params=["maps in memory", "maps spilled to disk"])
def maps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scenario twice: with the restore's id maps in memory, and spilled to SQLite files
    (as a restore of more than spillmap.DEFAULT_LIMIT documents has them)."""
    if request.param == "maps spilled to disk":
        monkeypatch.setattr(spillmap, "DEFAULT_LIMIT", 4)


def state(db: Any, name: str) -> tuple[int, str]:
    d = StateDigest()
    for batch in raw_batches(db[name]):
        pos = 0
        while pos < len(batch):
            n = int.from_bytes(batch[pos : pos + 4], "little")
            d.add(batch[pos : pos + n])
            pos += n
    return d.count, d.hexdigest


def engines(settings: Settings, db: Any, keyring: KeyRing) -> tuple[BackupEngine, RestoreEngine]:
    store = BackupStore(settings.backup_dir)
    return (
        BackupEngine(settings, db, store, keyring, retry_backoff_s=0.05),
        RestoreEngine(settings, db, store, keyring),
    )


@pytest.fixture
def seeded(
    settings: Settings, mongo_db: Any, keyring: KeyRing
) -> tuple[BackupEngine, RestoreEngine, str]:
    seed_database(mongo_db, 60, seed=11)
    b, r = engines(settings, mongo_db, keyring)
    full = b.run("full", ["conversations", "sessions"], include_files=False)
    return b, r, full.backup_id


# 1. backup -> delete -> restore -> verify
def test_backup_delete_restore_reproduces_the_state_digest(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    before = state(mongo_db, "conversations")
    mongo_db["conversations"].drop()
    report = restore.restore(bid, "conversations")
    assert report.verified, report.verification
    assert report.inserted == 60 and report.restored == 60
    assert any("state digest equals" in v for v in report.verification)
    assert state(mongo_db, "conversations") == before
    assert report.rollback_id


# 2. duplicates
def test_restore_skip_duplicates_keeps_existing_documents_and_brings_back_deleted(
    seeded: Any, mongo_db: Any
) -> None:
    _, restore, bid = seeded
    convs = mongo_db["conversations"]
    ids = sorted(d["_id"] for d in convs.find({}, {"_id": 1}))
    convs.update_many({"_id": {"$in": ids[:3]}}, {"$set": {"status": "edited-after-backup"}})
    convs.delete_many({"_id": {"$in": ids[3:8]}})
    report = restore.restore(bid, "conversations")
    assert (report.inserted, report.skipped, report.overwritten) == (5, 55, 0)
    assert report.verified
    assert convs.count_documents({"status": "edited-after-backup"}) == 3  # newer data not clobbered
    assert convs.count_documents({}) == 60


# 3. conflicts: overwrite and merge, exact documents
def test_restore_overwrite_replaces_with_the_backup_version(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    convs = mongo_db["conversations"]
    target = convs.find_one(sort=[("_id", 1)])
    original = bson.encode(target)
    convs.update_one({"_id": target["_id"]}, {"$set": {"status": "changed", "extra": 1}})
    report = restore.restore(bid, "conversations", strategy="overwrite")
    assert report.overwritten == 1 and report.skipped == 59 and report.verified
    assert bson.encode(convs.find_one({"_id": target["_id"]})) == original


def test_merge_rules_on_exact_documents() -> None:
    t = T0
    current = {
        "_id": 1, "status": "closed", "updated_at": t + timedelta(hours=2), "only_current": True,
        "user": {"name": "Ana", "phone": "1"},
        "messages": [{"message_id": "a", "timestamp": t, "content": "hola"},
                     {"message_id": "c", "timestamp": t + timedelta(minutes=2), "content": "nuevo"}],
    }  # fmt: skip
    backup = {
        "_id": 1, "status": "open", "updated_at": t + timedelta(hours=1), "only_backup": 7,
        "user": {"name": "Ana María", "city": "Salto"},
        "messages": [{"message_id": "a", "timestamp": t, "content": "hola"},
                     {"message_id": "b", "timestamp": t + timedelta(minutes=1), "content": "perdido"}],
    }  # fmt: skip
    merged = merge_documents(
        current, backup, timestamp_field="updated_at", merge_keys={"messages": "message_id"}
    )
    assert merged == {
        "_id": 1, "status": "closed", "updated_at": t + timedelta(hours=2), "only_current": True, "only_backup": 7,
        "user": {"name": "Ana", "phone": "1", "city": "Salto"},
        "messages": [{"message_id": "a", "timestamp": t, "content": "hola"},
                     {"message_id": "b", "timestamp": t + timedelta(minutes=1), "content": "perdido"},
                     {"message_id": "c", "timestamp": t + timedelta(minutes=2), "content": "nuevo"}],
    }  # fmt: skip
    # the backup side is newer: its scalars win, nothing of the current side is lost
    backup["updated_at"] = t + timedelta(hours=3)
    merged = merge_documents(
        current, backup, timestamp_field="updated_at", merge_keys={"messages": "message_id"}
    )
    assert (
        merged["status"] == "open"
        and merged["only_current"] is True
        and len(merged["messages"]) == 3
    )


def test_restore_merge_unions_messages_lost_from_the_current_document(
    seeded: Any, mongo_db: Any
) -> None:
    _, restore, bid = seeded
    convs = mongo_db["conversations"]
    doc = convs.find_one(sort=[("_id", 1)])
    lost = doc["messages"][0]
    later = datetime.now(timezone.utc).replace(microsecond=0)
    new_msg = {"role": "user", "content": "nuevo", "timestamp": later, "message_id": "after-backup"}
    convs.update_one(
        {"_id": doc["_id"]},
        {
            "$set": {
                "messages": [*doc["messages"][1:], new_msg],
                "updated_at": later,
                "status": "follow_up",
            }
        },
    )
    report = restore.restore(bid, "conversations", strategy="merge")
    assert report.merged == 1 and report.verified
    got = convs.find_one({"_id": doc["_id"]})
    ids = [m["message_id"] for m in got["messages"]]
    assert ids == [m["message_id"] for m in doc["messages"]] + ["after-backup"]
    assert lost["message_id"] in ids
    assert got["status"] == "follow_up"  # the current side is newer


def test_restore_timestamp_based_keeps_the_newer_version(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    convs = mongo_db["conversations"]
    a, b = list(convs.find(sort=[("_id", 1)]).limit(2))
    convs.update_one(
        {"_id": a["_id"]},
        {"$set": {"status": "newer", "updated_at": a["updated_at"] + timedelta(days=1)}},
    )
    convs.update_one(
        {"_id": b["_id"]},
        {"$set": {"status": "older", "updated_at": b["updated_at"] - timedelta(days=1)}},
    )
    report = restore.restore(bid, "conversations", strategy="timestamp_based")
    assert report.overwritten == 1 and report.verified
    assert convs.find_one({"_id": a["_id"]})["status"] == "newer"
    assert convs.find_one({"_id": b["_id"]})["status"] == b["status"]


# 4. selective
def test_restore_by_session_ids_restores_only_those(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    mongo_db["conversations"].drop()
    report = restore.restore(
        bid,
        "conversations",
        filters=RestoreFilters(session_ids=["sess-0011-0000003", "sess-0011-0000007"]),
    )
    assert report.inserted == 2 and report.filtered_out == 58 and report.verified
    assert sorted(d["session_id"] for d in mongo_db["conversations"].find()) == [
        "sess-0011-0000003",
        "sess-0011-0000007",
    ]


def test_restore_by_date_range_uses_the_timestamp_field(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    docs = list(mongo_db["conversations"].find({}, {"updated_at": 1}))
    lo, hi = T0 - timedelta(days=20), T0 - timedelta(days=10)
    expected = {d["_id"] for d in docs if lo <= d["updated_at"] <= hi}
    assert 0 < len(expected) < 60
    mongo_db["conversations"].drop()
    report = restore.restore(bid, "conversations", filters=RestoreFilters(date_from=lo, date_to=hi))
    assert {d["_id"] for d in mongo_db["conversations"].find({}, {"_id": 1})} == expected
    assert report.inserted == len(expected)


# 5. integrity
def test_tampered_backup_is_refused_before_any_write(
    seeded: Any, mongo_db: Any, settings: Settings
) -> None:
    _, restore, bid = seeded
    store = BackupStore(settings.backup_dir)
    ref = store.resolve(bid)
    archive = ref.payload_dir / "conversations.bson.zst.enc"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    archive.write_bytes(bytes(data))
    mongo_db["conversations"].drop()
    with pytest.raises(IntegrityError, match=r"conversations\.bson\.zst\.enc"):
        restore.restore(bid, "conversations")
    assert mongo_db["conversations"].count_documents({}) == 0
    assert [r for r in store.refs() if r.backup_type == "rollback"] == []


def test_restore_with_the_wrong_key_writes_nothing(
    seeded: Any, mongo_db: Any, settings: Settings
) -> None:
    import os

    from bmc_pipeline.engine.errors import KeyConfigError

    _, _, bid = seeded
    mongo_db["conversations"].drop()
    other = RestoreEngine(
        settings, mongo_db, BackupStore(settings.backup_dir), KeyRing([Key(os.urandom(32))])
    )
    with pytest.raises(KeyConfigError, match="not in the configured key ring"):
        other.restore(bid, "conversations")
    assert mongo_db["conversations"].count_documents({}) == 0


def test_bad_input_is_refused_with_clear_errors(seeded: Any) -> None:
    _, restore, bid = seeded
    with pytest.raises(BmcError, match="not a backup id"):
        restore.restore("../../etc", "conversations")
    with pytest.raises(BmcError, match="holds no collection 'nope'"):
        restore.restore(bid, "nope")
    with pytest.raises(BmcError, match="invalid collection name"):
        restore.restore(bid, "conversations", target_collection="$bad")
    with pytest.raises(BmcError, match="unknown strategy"):
        restore.restore(bid, "conversations", strategy="yolo")
    with pytest.raises(BmcError, match="not a date"):
        RestoreFilters.from_dict({"date_range": {"from": "yesterday"}})
    with pytest.raises(BmcError, match="unknown restore filter"):
        RestoreFilters.from_dict({"$where": "1"})


# 6. rollback
def test_rollback_returns_the_exact_previous_state(seeded: Any, mongo_db: Any) -> None:
    _, restore, bid = seeded
    convs = mongo_db["conversations"]
    ids = sorted(d["_id"] for d in convs.find({}, {"_id": 1}))
    convs.update_many({"_id": {"$in": ids[:4]}}, {"$set": {"status": "local-edit"}})
    convs.delete_many({"_id": {"$in": ids[4:9]}})
    convs.insert_one({"session_id": "only-now", "messages": [], "created_at": T0})
    before = state(mongo_db, "conversations")
    report = restore.restore(bid, "conversations", strategy="overwrite")
    assert report.overwritten == 4 and report.inserted == 5
    assert state(mongo_db, "conversations") != before
    result = restore.rollback(report.rollback_id or "")
    assert result["verified"], result
    assert state(mongo_db, "conversations") == before


def test_dry_run_writes_nothing_not_even_a_rollback(
    seeded: Any, mongo_db: Any, settings: Settings
) -> None:
    _, restore, bid = seeded
    mongo_db["conversations"].delete_many(
        {"session_id": {"$in": ["sess-0011-0000001", "sess-0011-0000002"]}}
    )
    before = state(mongo_db, "conversations")
    report = restore.restore(bid, "conversations", dry_run=True)
    assert report.inserted == 2 and report.rollback_id is None and not report.verified
    assert len(report.samples["insert"]) == 2
    assert state(mongo_db, "conversations") == before
    assert [r for r in BackupStore(settings.backup_dir).refs() if r.backup_type == "rollback"] == []


# harder ones
def test_point_in_time_across_a_full_and_two_incrementals(seeded: Any, mongo_db: Any) -> None:
    backup, restore, _ = seeded
    convs = mongo_db["conversations"]
    ids = sorted(d["_id"] for d in convs.find({}, {"_id": 1}))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    convs.update_many({"_id": {"$in": ids[:5]}}, {"$set": {"status": "v2", "updated_at": now}})
    convs.delete_many({"_id": {"$in": ids[5:10]}})
    inc1 = backup.run("incremental", ["conversations"], include_files=False)
    at_inc1 = state(mongo_db, "conversations")
    convs.update_many(
        {"_id": {"$in": ids[:2]}},
        {"$set": {"status": "v3", "updated_at": now + timedelta(seconds=1)}},
    )
    convs.delete_many({"_id": {"$in": ids[10:12]}})
    convs.insert_one({"session_id": "late", "messages": [], "created_at": now, "updated_at": now})
    inc2 = backup.run("incremental", ["conversations"], include_files=False)
    at_inc2 = state(mongo_db, "conversations")

    report = restore.restore(inc1.backup_id, "conversations", target_collection="pit1")
    assert report.verified and state(mongo_db, "pit1") == at_inc1
    assert report.chain[-1] == inc1.backup_id and len(report.chain) == 2
    pit = inc2.manifest.taken + timedelta(seconds=1)
    # the id may name any backup of the chain, here its full: the time picks the second incremental
    by_full = restore.restore(
        report.chain[0],
        "conversations",
        target_collection="pit3",
        filters=RestoreFilters(point_in_time=pit),
    )
    assert by_full.backup_id == inc2.backup_id and by_full.verified
    report = restore.restore(
        "latest",
        "conversations",
        target_collection="pit2",
        filters=RestoreFilters(point_in_time=pit),
    )
    assert report.verified and report.backup_id == inc2.backup_id
    assert state(mongo_db, "pit2") == at_inc2
    # in place, deletions are applied only when asked
    convs.insert_many(
        [
            {
                "_id": ObjectId(),
                "session_id": "x",
                "messages": [],
                "created_at": now,
                "updated_at": now,
            }
        ]
    )
    restore_in_place = restore.restore(
        inc1.backup_id,
        "conversations",
        strategy="overwrite",
        filters=RestoreFilters(drop_deleted=True),
    )
    assert restore_in_place.verified
    assert convs.count_documents({"session_id": "late"}) == 1  # newer than the point: kept


def test_restore_into_another_collection_leaves_the_source_alone(
    seeded: Any, mongo_db: Any
) -> None:
    _, restore, bid = seeded
    before = state(mongo_db, "conversations")
    report = restore.restore(bid, "conversations", target_collection="conversations_restored")
    assert report.verified and state(mongo_db, "conversations_restored") == before
    assert state(mongo_db, "conversations") == before


def test_invalid_documents_are_quarantined_and_the_rest_restored(
    settings: Settings, mongo_db: Any, keyring: KeyRing
) -> None:
    seed_database(mongo_db, 10, seed=12)
    mongo_db["conversations"].insert_one({"session_id": 5, "messages": "not a list"})
    backup, restore = engines(settings, mongo_db, keyring)
    bid = backup.run("full", ["conversations"], include_files=False).backup_id
    mongo_db["conversations"].drop()
    report = restore.restore(bid, "conversations")
    assert report.inserted == 10 and report.invalid == 1
    # kept encrypted: nothing of the document is readable in the file itself
    assert report.quarantine_file and report.quarantine_id
    stored = Path(report.quarantine_file).read_bytes()
    assert b"session_id" not in stored and b"not a list" not in stored
    store = BackupStore(settings.backup_dir)
    ((reason, document),) = read_quarantine(store, keyring, report.quarantine_id)
    assert document["messages"] == "not a list" and "session_id" in reason
    with pytest.raises(BmcError, match="fail_fast"):
        restore.restore(bid, "conversations", target_collection="other", fail_fast=True)


def test_restore_interrupted_by_server_stop_then_rolled_back_leaves_the_original(
    own_server: DevServer, tmp_path: Path, key: Key
) -> None:
    server = own_server
    settings = make_settings(tmp_path, server.uri, "bmc", key)
    settings = settings.model_copy(
        update={"restore": settings.restore.model_copy(update={"batch_size": 10})}
    )
    db = connect(server.uri)["bmc"]
    seed_database(db, 60, seed=13)
    keyring = KeyRing([key])
    backup, _ = engines(settings, db, keyring)
    bid = backup.run("full", ["conversations"], include_files=False).backup_id
    db["conversations"].update_many({}, {"$set": {"status": "local"}})
    before = state(db, "conversations")

    def stop_when_writing(msg: str) -> None:
        if "now writing" in msg:
            server.stop()

    store = BackupStore(settings.backup_dir)
    interrupted = RestoreEngine(
        settings, connect(server.uri)["bmc"], store, keyring, log=stop_when_writing
    )
    with pytest.raises(PartialRestoreError) as stopped:
        interrupted.restore(bid, "conversations", strategy="overwrite")
    rollback = [r for r in store.refs() if r.backup_type == "rollback"]
    assert len(rollback) == 1
    # the server is gone, so the automatic rollback could not run: the error names the point
    assert isinstance(stopped.value.__cause__, DatabaseError)
    assert stopped.value.rollback_id == rollback[0].backup_id and not stopped.value.rolled_back
    server.start(die_with_parent=True)
    db = connect(server.uri)["bmc"]
    result = RestoreEngine(settings, db, store, keyring).rollback(rollback[0].backup_id)
    assert result["verified"] and state(db, "conversations") == before
