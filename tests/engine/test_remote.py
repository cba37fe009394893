"""The remote copy (fsspec): upload order, lost local disk, interrupted uploads, tampering, retention.

``file://`` stands for a mounted NAS or any fsspec filesystem; ``memory://`` for an object store
without directories or rename semantics of its own. Both go through the same fsspec calls as s3://.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BackupNotFoundError, IntegrityError
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.remote import RemoteError, RemoteStore
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.retention import RetentionPolicy, delete_backup, rotate
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.validate import validate_backup
from tests.support import make_settings, write_config


def _settings(tmp_path: Path, key: Key, url: str) -> Settings:
    s = make_settings(tmp_path, f"mongomock://{tmp_path.name}", "bmc", key)
    return s.model_copy(update={"storage": s.storage.model_copy(update={"remote_url": url})})


@pytest.fixture(params=["file", "memory"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, key: Key
) -> tuple[Settings, Any, RemoteStore]:
    url = (
        f"file://{tmp_path / 'offsite'}"
        if request.param == "file"
        else f"memory://bmc-remote-{tmp_path.name}/backups"
    )
    s = _settings(tmp_path, key, url)
    db = connect(s.mongodb.uri)[s.mongodb.database]
    seed_database(db, 40, seed=8)
    write_files(s.files_root, seed=8)
    remote = Deployment(s).remote()
    assert remote is not None
    return s, db, remote


def _backup(s: Settings, db: Any, keyring: KeyRing, kind: str = "full") -> str:
    return BackupEngine(s, db, BackupStore(s.backup_dir), keyring).run(kind).backup_id


def test_a_lost_local_disk_is_recovered_from_the_remote_copy(
    setup: tuple[Settings, Any, RemoteStore], keyring: KeyRing
) -> None:
    s, db, remote = setup
    store = BackupStore(s.backup_dir)
    bid = _backup(s, db, keyring)
    pushed = remote.push(store, store.ref(bid), keyring)
    assert pushed.uploaded_files > 5 and pushed.already_there == 0
    assert remote.backup_ids() == [bid]
    again = remote.push(store, store.ref(bid), keyring)  # idempotent: nothing re-sent
    assert again.uploaded_files == 0 and again.already_there == pushed.uploaded_files

    shutil.rmtree(s.backup_dir)  # the disk is gone
    db.drop_collection("conversations")
    ref = remote.pull(store, bid, keyring)
    report = validate_backup(store, ref, keyring, blobs=Deployment(s).blobs(keyring))
    assert report.ok, report.errors
    restored = RestoreEngine(s, db, store, keyring).restore(bid, "conversations", dry_run=False)
    assert restored.verified and db["conversations"].count_documents({}) == 40


def test_an_interrupted_upload_is_not_a_backup_and_the_next_push_completes_it(
    setup: tuple[Settings, Any, RemoteStore], keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, db, remote = setup
    store = BackupStore(s.backup_dir)
    bid = _backup(s, db, keyring)
    real_put = remote.fs.put_file
    calls = {"n": 0}

    def failing_put(src: str, dest: str, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("connection reset by peer")
        return real_put(src, dest, *a, **kw)

    monkeypatch.setattr(remote.fs, "put_file", failing_put)
    with pytest.raises(RemoteError, match="connection reset"):
        remote.push(store, store.ref(bid), keyring)
    assert remote.backup_ids() == []  # archives without a manifest are not a backup
    result = remote.push(store, store.ref(bid), keyring)
    assert result.already_there == 3 and remote.backup_ids() == [bid]


def test_a_tampered_remote_manifest_is_refused_before_anything_is_downloaded(
    setup: tuple[Settings, Any, RemoteStore], keyring: KeyRing
) -> None:
    s, db, remote = setup
    store = BackupStore(s.backup_dir)
    bid = _backup(s, db, keyring)
    remote.push(store, store.ref(bid), keyring)
    shutil.rmtree(s.backup_dir)
    path = f"{remote.root}/{store.ref(bid).manifest_path.relative_to(store.root).as_posix()}"
    doc = json.loads(remote.fs.cat_file(path))
    doc["collections"]["conversations"]["documents"]["documents"] += 1
    remote.fs.pipe_file(path, json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="does not authenticate"):
        remote.pull(store, bid, keyring)
    assert not Path(s.backup_dir).exists() or not any(Path(s.backup_dir).rglob("*.json"))
    with pytest.raises(BackupNotFoundError, match="is not at"):
        remote.pull(store, "20200101T000000Z-full-abcdef", keyring)


def test_retention_and_deletion_remove_the_remote_copies_too(
    setup: tuple[Settings, Any, RemoteStore], keyring: KeyRing
) -> None:
    s, db, remote = setup
    store = BackupStore(s.backup_dir)
    first = _backup(s, db, keyring)
    second = _backup(s, db, keyring)
    for b in (first, second):
        remote.push(store, store.ref(b), keyring)
    # both were taken today: the daily rule keeps only the newest of the day
    result = rotate(
        store, keyring, RetentionPolicy(daily=1, weekly=0, monthly=0), dry_run=False, remote=remote
    )
    assert result.deleted == [first]
    assert remote.backup_ids() == [second]
    third = _backup(s, db, keyring)
    remote.push(store, store.ref(third), keyring)
    delete_backup(store, keyring, second, remote)
    assert remote.backup_ids() == [third]


def test_dagster_backups_are_copied_and_the_commands_push_pull_and_list(
    tmp_path: Path,
    key: Key,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import base64

    from bmc_pipeline.launch import run_backup

    offsite = tmp_path / "offsite"
    s = _settings(tmp_path, key, f"file://{offsite}")
    seed_database(connect(s.mongodb.uri)[s.mongodb.database], 20, seed=9)
    monkeypatch.setenv("BMC_BACKUP_KEY", base64.b64encode(key.material).decode())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    summary = run_backup(s, "full", include_files=False)
    bid = summary["backup_id"]
    assert (offsite / store_rel(s, bid)).is_file()  # the run copied it

    cfg = str(write_config(s, tmp_path / "config.json"))
    assert main(["--config", cfg, "list", "--remote", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["backups"] == [{"backup_id": bid, "local_copy": True}]
    shutil.rmtree(s.backup_dir)
    assert main(["--config", cfg, "pull", bid]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["--config", cfg, "push", "--all"]) == 0
    assert "nothing to copy" in capsys.readouterr().out
    assert main(["--config", cfg, "pull", "20200101T000000Z-full-abcdef"]) == 4

    from bmc_pipeline.doctor import run_doctor

    def remote_check() -> dict[str, Any]:
        return next(c for c in run_doctor(s)["checks"] if c["name"] == "remote copy")

    assert remote_check()["status"] == "ok"
    shutil.rmtree(offsite)  # the remote copy is lost: doctor says how to restore it
    check = remote_check()
    assert check["status"] == "fail" and check["fix"] == "bmc-backup push --all"


def store_rel(s: Settings, bid: str) -> Path:
    store = BackupStore(s.backup_dir)
    return store.ref(bid).manifest_path.relative_to(store.root)


def test_an_unknown_scheme_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="cannot be used"):
        RemoteStore("nosuchscheme://bucket/x")


def test_capture_segments_are_copied_and_fetched_back_authenticated(
    setup: tuple[Settings, Any, RemoteStore], keyring: KeyRing, tmp_path: Path
) -> None:
    from datetime import datetime, timezone

    from bmc_pipeline.engine.capture.changes import CapturedChange
    from bmc_pipeline.engine.capture.segments import CaptureStore, CoveredRange, Position

    s, _, remote = setup
    store = BackupStore(s.backup_dir)
    capture = CaptureStore(store, keyring)
    t = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    doc = b"\x0e\x00\x00\x00\x10_id\x00\x07\x00\x00\x00\x00"
    capture.publish([CapturedChange.put("quotes", t, doc)], sealed=t)
    capture.save_position(Position(source="oplog", database="bmc",
                                   ranges=[CoveredRange(start=t, until=t)]))  # fmt: skip
    assert remote.push_capture(store, keyring)["segments_pushed"] == 1
    assert remote.push_capture(store, keyring)["segments_pushed"] == 0  # already there

    elsewhere = BackupStore(tmp_path / "new-machine")
    assert remote.pull_capture(elsewhere, keyring) == {"segments_pulled": 1}
    fetched = CaptureStore(elsewhere, keyring)
    (seg,) = fetched.segments()
    assert fetched.changes(seg, "quotes") == capture.changes(capture.segments()[0], "quotes")
    assert fetched.position() == capture.position()

    # a segment manifest edited at the remote is refused before anything is written here
    name = f"{remote.root}/capture/{seg.manifest_path.parent.name}/{seg.name}.json"
    doc_at_remote = json.loads(remote.fs.cat_file(name))
    doc_at_remote["segment"]["last"] = "2030-01-01T00:00:00+00:00"
    remote.fs.pipe_file(name, json.dumps(doc_at_remote).encode())
    third = BackupStore(tmp_path / "third")
    with pytest.raises(IntegrityError, match="does not authenticate"):
        remote.pull_capture(third, keyring)
    assert CaptureStore(third, keyring).segments() == []
