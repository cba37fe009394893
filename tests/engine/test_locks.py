"""Restores that cannot clobber each other, rollbacks that do not throw newer work away, and
leftovers of dead writers removed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import GuardedError
from bmc_pipeline.engine.locks import lock_path
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.restore.after import AFTER_FILE
from bmc_pipeline.engine.retention import RetentionPolicy, rotate
from bmc_pipeline.engine.store import BackupStore

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bmc_pipeline.engine.locks import restoring
    with restoring(Path(sys.argv[1]), sys.argv[2:], "a restore from the command line"):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def engine(mock_settings: Settings, mock_db: Any, keyring: KeyRing) -> RestoreEngine:
    return RestoreEngine(mock_settings, mock_db, BackupStore(mock_settings.backup_dir), keyring)


@pytest.fixture
def other_process(mock_settings: Settings, mock_db: Any) -> Iterator[subprocess.Popen[str]]:
    """Another process (another restore, say) holding the lock of ``<db>.quotes``."""
    root = str(mock_settings.backup_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root, f"{mock_db.name}.quotes"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_restore_is_refused_while_another_process_restores_the_same_collection(
    engine: RestoreEngine,
    full_backup: BackupResult,
    mock_db: Any,
    other_process: subprocess.Popen[str],
) -> None:
    mock_db.quotes.delete_many({})
    with pytest.raises(GuardedError) as refused:
        engine.restore(full_backup.backup_id, "quotes")
    message = str(refused.value)
    assert f"{mock_db.name}.quotes is being restored or rolled back" in message
    assert f"pid {other_process.pid}" in message and "a restore from the command line" in message
    assert mock_db.quotes.count_documents({}) == 0  # nothing was written, no rollback point made
    assert not BackupStore(engine.store.root).refs(backup_type="rollback")
    # other collections, and dry runs of this one, are not held up
    assert engine.restore(full_backup.backup_id, "quotes", dry_run=True).inserted > 0
    assert engine.restore(full_backup.backup_id, "sessions").verified
    # the holder dies (killed, not cleaned up): the kernel released its lock
    other_process.send_signal(signal.SIGKILL)
    other_process.wait(timeout=10)
    assert engine.restore(full_backup.backup_id, "quotes").verified


def test_a_rollback_is_refused_while_its_collection_is_being_restored(
    engine: RestoreEngine, full_backup: BackupResult, mock_db: Any, mock_settings: Settings
) -> None:
    mock_db.quotes.delete_many({})
    report = engine.restore(full_backup.backup_id, "quotes")
    root = str(mock_settings.backup_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root, f"{mock_db.name}.quotes"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(GuardedError, match="being restored or rolled back"):
            engine.rollback(str(report.rollback_id))
        assert mock_db.quotes.count_documents({}) == report.inserted  # untouched
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert engine.rollback(str(report.rollback_id))["verified"]


def test_a_rollback_names_documents_changed_after_the_restore_and_keeps_them_unless_forced(
    engine: RestoreEngine, full_backup: BackupResult, mock_db: Any
) -> None:
    """The attack: a rollback that deleted every document written after the restore."""
    mock_db.quotes.delete_many({})
    report = engine.restore(full_backup.backup_id, "quotes")
    rid = str(report.rollback_id)
    assert (engine.store.ref(rid).payload_dir / AFTER_FILE).exists()
    restored = [d["_id"] for d in mock_db.quotes.find({}, {"_id": 1}).limit(2)]
    # the application goes on: a customer accepts two quotes after the restore
    for _id in restored:
        mock_db.quotes.update_one({"_id": _id}, {"$set": {"status": "accepted-after-restore"}})
    with pytest.raises(GuardedError) as refused:
        engine.rollback(rid)
    message = str(refused.value)
    assert "2 document(s) the restore wrote were changed after it" in message
    assert "2 in quotes" in message and repr(restored[0]) in message and "--force" in message
    assert mock_db.quotes.count_documents({"status": "accepted-after-restore"}) == 2  # kept
    # forced: rolled back as asked, the two changes with it
    result = engine.rollback(rid, force=True)
    assert result["verified"] and mock_db.quotes.count_documents({}) == 0


def test_a_rollback_without_later_changes_needs_no_force(
    engine: RestoreEngine, full_backup: BackupResult, mock_db: Any
) -> None:
    before = mock_db.sessions.count_documents({})
    mock_db.sessions.delete_many(
        {"_id": {"$in": [d["_id"] for d in mock_db.sessions.find().limit(3)]}}
    )
    report = engine.restore(full_backup.backup_id, "sessions")
    assert report.inserted == 3 and mock_db.sessions.count_documents({}) == before
    assert engine.rollback(str(report.rollback_id))["verified"]
    assert mock_db.sessions.count_documents({}) == before - 3


def test_leftovers_of_a_dead_writer_are_removed_and_a_live_writer_is_left_alone(
    mock_settings: Settings, keyring: KeyRing, full_backup: BackupResult
) -> None:
    store = BackupStore(mock_settings.backup_dir)
    day = store.ref(full_backup.backup_id).payload_dir.parent
    dead = day / ".tmp-20261201T000000Z-full-abcdef"  # what a SIGKILLed backup leaves
    (dead / "x").mkdir(parents=True)
    with store.pending("20261201T000001Z-full-123456") as live:
        assert set(store.leftovers()) == {dead, live.tmp}
        assert store.stale_leftovers() == [dead]
        # the default grace period (a day) no longer protects leftovers: the lock tells
        result = rotate(store, keyring, RetentionPolicy(), dry_run=False)
        assert result.leftovers_removed == [str(dead)]
        assert not dead.exists() and live.tmp.exists()
    assert store.leftovers() == []
    assert not lock_path(store.root, "backup", "20261201T000001Z-full-123456").exists()
    assert list((store.root / ".locks").iterdir()) == []
    assert [r.backup_id for r in store.refs()] == [full_backup.backup_id]


def test_the_next_backup_removes_what_a_dead_one_left(
    mock_settings: Settings, mock_db: Any, keyring: KeyRing, full_backup: BackupResult
) -> None:
    from bmc_pipeline.engine.backup import BackupEngine

    store = BackupStore(mock_settings.backup_dir)
    day = store.ref(full_backup.backup_id).payload_dir.parent
    dead = day / ".tmp-20261201T000000Z-full-abcdef"
    dead.mkdir()
    (dead / "conversations.bson.zst.enc").write_bytes(b"half an archive")
    said: list[str] = []
    BackupEngine(mock_settings, mock_db, store, keyring, log=said.append).run(
        "incremental", include_files=False
    )
    assert not dead.exists()
    assert any("left by a backup that did not finish" in s for s in said)


def test_lock_names_are_plain_file_names(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "restore", "files:/srv/bmc/../etc")
    assert path.parent == tmp_path / ".locks" and "/" not in path.name
