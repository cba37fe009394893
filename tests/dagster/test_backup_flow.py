"""Backups against a real MongoDB wire-protocol server (FerretDB, or MONGODB_URI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import DevServer
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.errors import DatabaseError
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.rawbson import decode_id
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.validate import validate_backup
from tests.support import make_settings, write_config


def engine_for(settings: Settings, db: Any, keyring: KeyRing, **kw: Any) -> BackupEngine:
    return BackupEngine(
        settings, db, BackupStore(settings.backup_dir), keyring, retry_backoff_s=0.05, **kw
    )


def blobs_for(settings: Settings, keyring: KeyRing) -> BlobStore:
    return BlobStore(BackupStore(settings.backup_dir), keyring, level=3, segment_size=1 << 20)


def raw_docs(db: Any, name: str) -> dict[Any, bytes]:
    coll = db.get_collection(name, codec_options=bson.CodecOptions(document_class=RawBSONDocument))
    return {bson.decode(d.raw)["_id"]: d.raw for d in coll.find({})}


def test_full_backup_validates_and_exports_byte_identical_bson(
    settings: Settings, mongo_db: Any, keyring: KeyRing, tmp_path: Path
) -> None:
    seed_database(mongo_db, 300, seed=1)
    write_files(settings.files_root)
    result = engine_for(settings, mongo_db, keyring).run("full")
    store = BackupStore(settings.backup_dir)
    report = validate_backup(store, result.ref, keyring, blobs=blobs_for(settings, keyring))
    assert report.ok, report.errors
    assert result.collections["conversations"].documents.documents == 300
    assert result.files is not None and len(result.files.files) == 6

    os.environ["BMC_BACKUP_KEY"] = settings.backup_key or ""
    try:
        out = tmp_path / "conversations.bson"
        assert main(["--config", str(write_config(settings, tmp_path / "cfg.json")), "export", result.backup_id,
                     "--collection", "conversations", "--format", "bson", "--out", str(out)]) == 0  # fmt: skip
        exported = {bson.decode(d)["_id"]: d for d in _split(out.read_bytes())}
        assert exported == raw_docs(mongo_db, "conversations")
        metadata = json.loads((tmp_path / "conversations.metadata.json").read_text())
        names = {ix["name"] for ix in metadata["indexes"]}
        assert {"_id_", "session_id_1", "updated_at_1"} <= names  # as mongorestore reads them
        assert metadata["collectionName"] == "conversations"
        ej = tmp_path / "conversations.json"
        assert main(["--config", str(write_config(settings, tmp_path / "cfg.json")), "export", result.backup_id,
                     "--collection", "conversations", "--format", "ejson", "--out", str(ej)]) == 0  # fmt: skip
        envelope = json.loads(ej.read_text())
        assert envelope["backup_metadata"]["backup_id"] == result.backup_id
        assert len(envelope["collections"]["conversations"]) == 300
        assert set(envelope) >= {"backup_metadata", "collections", "filesystem", "checksums"}
    finally:
        del os.environ["BMC_BACKUP_KEY"]


def _split(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "little")
        out.append(data[pos : pos + n])
        pos += n
    return out


def _changes(db: Any) -> tuple[set[Any], set[Any]]:
    """Update 7, delete 5, insert 3 conversations; returns (changed ids, deleted ids)."""
    convs = db["conversations"]
    ids = sorted(d["_id"] for d in convs.find({}, {"_id": 1}))
    now = datetime.now(timezone.utc)
    updated, deleted = ids[:7], ids[10:15]
    for i in updated:
        convs.update_one({"_id": i}, {"$set": {"status": "closed", "updated_at": now}})
    convs.delete_many({"_id": {"$in": deleted}})
    new = convs.insert_many(
        [{"session_id": f"new-{n}", "messages": [], "updated_at": now} for n in range(3)]
    )
    return set(updated) | set(new.inserted_ids), set(deleted)


@pytest.mark.parametrize("timestamp_field", ["updated_at", None])
def test_incremental_holds_exactly_changed_documents_and_deleted_ids(
    tmp_path: Path,
    mongo_uri: str,
    mongo_db: Any,
    db_name: str,
    key: Key,
    timestamp_field: str | None,
) -> None:
    settings = make_settings(tmp_path, mongo_uri, db_name, key)
    coll_cfg = settings.collections["conversations"].model_copy(
        update={"timestamp_field": timestamp_field}
    )
    settings = settings.model_copy(update={"collections": {"conversations": coll_cfg}})
    keyring = KeyRing([key])
    seed_database(mongo_db, 120, seed=2)
    engine = engine_for(settings, mongo_db, keyring)
    full = engine.run("full", include_files=False)
    changed, deleted = _changes(mongo_db)
    inc = engine.run("incremental", include_files=False)
    c = inc.collections["conversations"]
    assert c.parent == full.backup_id
    assert c.change_detection == ("timestamp" if timestamp_field else "content-hash")

    path = inc.ref.manifest_path.parent / inc.manifest.collections["conversations"].documents.file
    from bmc_pipeline.engine.archive import ArchiveReader

    with path.open("rb") as fh:
        got = {bson.decode(d)["_id"] for d in ArchiveReader(fh, keyring).documents()}
    tpath = inc.ref.manifest_path.parent / inc.manifest.collections["conversations"].tombstones.file
    with tpath.open("rb") as fh:
        tombs = {bson.decode(d)["_id"] for d in ArchiveReader(fh, keyring).documents()}
    assert got == changed
    assert tombs == deleted
    assert c.state.count == mongo_db["conversations"].count_documents({}) == 120 - 5 + 3

    # the state digest of the incremental point equals a fresh full backup's
    again = engine.run("full", include_files=False)
    assert again.collections["conversations"].state.hexdigest == c.state.hexdigest


def test_second_file_snapshot_with_one_changed_file_stores_one_blob(
    settings: Settings, mongo_db: Any, keyring: KeyRing
) -> None:
    files = write_files(settings.files_root)
    engine = engine_for(settings, mongo_db, keyring)
    first = engine.run("full", [], include_files=True)
    assert first.files is not None and first.files.new_blobs == len(
        {f.blob for f in first.files.files}
    )
    files[0].write_text(files[0].read_text() + " ", encoding="utf-8")
    second = engine.run("incremental", [], include_files=True)
    assert second.files is not None
    assert second.files.new_blobs == 1
    blobs = blobs_for(settings, keyring)
    changed = next(f for f in second.files.files if f.path == files[0].name)
    assert b"".join(blobs.read(changed.blob)) == files[0].read_bytes()


def test_backup_with_no_key_refuses_to_run(
    tmp_path: Path, mongo_uri: str, db_name: str, key: Key
) -> None:
    settings = make_settings(tmp_path, mongo_uri, db_name, key, BMC_BACKUP_KEY="")
    cfg = write_config(settings, tmp_path / "cfg.json")
    env_key = os.environ.pop("BMC_BACKUP_KEY", None)
    try:
        assert main(["--config", str(cfg), "backup", "--no-files"]) != 0
    finally:
        if env_key is not None:
            os.environ["BMC_BACKUP_KEY"] = env_key
    assert not list(BackupStore(settings.backup_dir).refs())


# -- tampering seen through `bmc-backup validate` ---------------------------------------------------
@pytest.fixture
def published(
    settings: Settings, mongo_db: Any, keyring: KeyRing, tmp_path: Path
) -> tuple[Path, str, Path]:
    seed_database(mongo_db, 200, seed=3)
    result = engine_for(settings, mongo_db, keyring).run(
        "full", ["conversations"], include_files=False
    )
    cfg = write_config(settings, tmp_path / "cfg.json")
    archive = (
        result.ref.manifest_path.parent
        / result.manifest.collections["conversations"].documents.file
    )
    os.environ["BMC_BACKUP_KEY"] = settings.backup_key or ""
    return cfg, result.backup_id, archive


@pytest.fixture(autouse=True)
def _clean_env() -> Any:
    yield
    os.environ.pop("BMC_BACKUP_KEY", None)


def validate_cli(
    cfg: Path, backup_id: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = main(["--config", str(cfg), "validate", backup_id, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_validate_passes_an_intact_backup(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, bid, _ = published
    code, report = validate_cli(cfg, bid, capsys)
    assert code == 0 and report["ok"]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda b: b + b"appended", "extra bytes"),
        (lambda b: b[:-100], "truncated"),
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "header does not authenticate"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "does not authenticate"),
    ],
)
def test_validate_names_damage_to_an_archive(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str], damage: Any, words: str
) -> None:
    cfg, bid, archive = published
    data = archive.read_bytes()
    archive.chmod(0o600)
    archive.write_bytes(damage(data))
    code, report = validate_cli(cfg, bid, capsys)
    assert code == 5 and not report["ok"]
    assert any(words in e and "conversations.bson.zst.enc" in e for e in report["errors"]), report[
        "errors"
    ]


def test_validate_detects_an_edited_manifest(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, bid, archive = published
    manifest = archive.parent.with_suffix(".json")
    doc = json.loads(manifest.read_text())
    doc["collections"]["conversations"]["documents"]["documents"] += 1
    manifest.write_text(json.dumps(doc))
    code, report = validate_cli(cfg, bid, capsys)
    assert code == 5
    assert any("does not authenticate" in e and "manifest" in e for e in report["errors"])


def test_validate_detects_a_flipped_bit_in_the_manifest(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, bid, archive = published
    manifest = archive.parent.with_suffix(".json")
    data = bytearray(manifest.read_bytes())
    pos = data.index(b'"documents": 200') + len(b'"documents": ')
    data[pos] ^= 0x01  # "200" -> "300"
    manifest.write_bytes(bytes(data))
    code, report = validate_cli(cfg, bid, capsys)
    assert code == 5 and "does not authenticate" in report["errors"][0]


def test_validate_with_the_wrong_key_says_which_key_is_needed(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, bid, _ = published
    import base64

    os.environ["BMC_BACKUP_KEY"] = base64.b64encode(os.urandom(32)).decode()
    code, report = validate_cli(cfg, bid, capsys)
    assert code == 5 and "not in the configured key ring" in report["errors"][0]


def test_validate_unknown_backup_id_exits_4(
    published: tuple[Path, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _, _ = published
    assert main(["--config", str(cfg), "validate", "20200101T000000Z-full-000000"]) == 4
    assert main(["--config", str(cfg), "validate", "../../etc/passwd"]) == 4
    assert "not a backup id" in capsys.readouterr().err


# -- crashes ------------------------------------------------------------------------------------
KILL_SCRIPT = """
import sys
from bmc_pipeline.config import load_settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import load_keyring
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.store import BackupStore
s = load_settings()
db = connect(s.mongodb.uri)[s.mongodb.database]
BackupEngine(s, db, BackupStore(s.backup_dir), load_keyring(s.backup_key, None),
             log=lambda m: print(m, flush=True)).run("full", include_files=False)
"""


def test_sigkill_mid_write_leaves_nothing_that_looks_like_a_backup(
    settings: Settings,
    mongo_db: Any,
    mongo_uri: str,
    db_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed_database(mongo_db, 1500, seed=4)
    env = {
        **os.environ,
        "BMC_CONFIG": str(write_config(settings, tmp_path / "cfg.json")),
        "BMC_BACKUP_KEY": settings.backup_key or "",
        "MONGODB_URI": mongo_uri,
        "BMC_DATABASE": db_name,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "backing up quotes" in line:  # conversations is written, the backup is half done
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    store = BackupStore(settings.backup_dir)
    assert store.refs() == []
    assert store.leftovers(), "the killed write left its temporary directory (expected, and hidden)"
    cfg = write_config(settings, tmp_path / "cfg.json")
    os.environ["BMC_BACKUP_KEY"] = settings.backup_key or ""
    assert main(["--config", str(cfg), "validate", "latest"]) == 4
    assert main(["--config", str(cfg), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 0
    # the next backup removes what the killed one left (its writer no longer holds the lock)
    assert main(["--config", str(cfg), "backup", "--no-files"]) == 0
    assert len(store.refs()) == 1 and store.leftovers() == []


def test_server_stopped_mid_backup_fails_cleanly_and_rerun_succeeds(
    own_server: DevServer, tmp_path: Path, key: Key
) -> None:
    server = own_server
    settings = make_settings(tmp_path, server.uri, "bmc", key)
    db = connect(server.uri)["bmc"]
    seed_database(db, 200, seed=5)
    keyring = KeyRing([key])

    def stop_on_quotes(msg: str) -> None:
        if "backing up quotes" in msg:
            server.stop()

    with pytest.raises(DatabaseError, match="quotes"):
        engine_for(settings, connect(server.uri)["bmc"], keyring, log=stop_on_quotes).run(
            "full", include_files=False
        )
    store = BackupStore(settings.backup_dir)
    assert store.refs() == [] and store.leftovers() == []

    server.start(die_with_parent=True)
    time.sleep(0.2)
    ok = engine_for(settings, connect(server.uri)["bmc"], keyring).run("full", include_files=False)
    assert validate_backup(store, ok.ref, keyring).ok
    assert [r.backup_id for r in store.refs()] == [ok.backup_id]


def test_decode_id_round_trip() -> None:
    from bmc_pipeline.engine.rawbson import encode_id

    for v in [1, "s", bson.ObjectId(), {"a": 1}, bson.Int64(5)]:
        assert decode_id(encode_id(v)) == v
