"""The ways in: the seed's Python API, the command line, and the Dagster jobs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from bson import json_util

from bmc_pipeline import restore_from_backup
from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.store import BackupStore
from tests.support import write_config


def use_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s: Settings) -> Path:
    """Point the process environment at ``s`` (the API and CLI read settings themselves)."""
    cfg = write_config(s, tmp_path / "cfg.json")
    monkeypatch.setenv("BMC_CONFIG", str(cfg))
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return cfg


@pytest.fixture
def mock_setup(
    mock_settings: Settings, tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Any, str]:
    s = mock_settings
    use_settings(monkeypatch, tmp_path, s)
    db = connect(s.mongodb.uri)[s.mongodb.database]
    seed_database(db, 30, seed=21)
    bid = (
        BackupEngine(s, db, BackupStore(s.backup_dir), KeyRing([key]))
        .run("full", ["conversations"], include_files=False)
        .backup_id
    )
    return s, db, bid


def test_restore_job_launchpad_default_is_a_dry_run(mock_setup: tuple[Settings, Any, str]) -> None:
    s, db, _ = mock_setup
    db["conversations"].drop()
    job = build_definitions(s).resolve_job_def("restore_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success
    report = result.output_for_node("restore_op")
    assert report["dry_run"] and report["inserted"] == 30
    assert db["conversations"].count_documents({}) == 0


def test_restore_job_and_rollback_job_write_verify_and_undo(
    mock_setup: tuple[Settings, Any, str],
) -> None:
    s, db, bid = mock_setup
    db["conversations"].delete_many({})
    defs = build_definitions(s)
    cfg = {
        "ops": {
            "restore_op": {
                "config": {"backup_id": bid, "collection": "conversations", "dry_run": False}
            }
        }
    }
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("restore_job").execute_in_process(
            run_config=cfg, instance=instance
        )
        assert result.success
        report = result.output_for_node("restore_op")
        assert report["verified"] and report["inserted"] == 30
        assert db["conversations"].count_documents({}) == 30
        obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert obs, "the restore is recorded on the backup's asset"
        rb = {"ops": {"rollback_op": {"config": {"rollback_id": report["rollback_id"]}}}}
        result = defs.resolve_job_def("rollback_job").execute_in_process(
            run_config=rb, instance=instance
        )
        assert result.success and result.output_for_node("rollback_op")["verified"]
    assert db["conversations"].count_documents({}) == 0
    assert defs.resolve_job_def("restore_job").tags["bmc/operation"] == "restore"


def test_seed_api_restores_from_a_backup_id_and_from_a_legacy_json_file(
    mock_setup: tuple[Settings, Any, str], tmp_path: Path
) -> None:
    _, db, bid = mock_setup
    docs = list(db["conversations"].find().sort("_id", 1))
    db["conversations"].drop()
    report = restore_from_backup(
        bid, "conversations", filters={"session_ids": [docs[0]["session_id"]]}
    )
    assert report["inserted"] == 1 and report["verified"]
    # a plain array of conversations in Extended JSON, as found on disk
    legacy = tmp_path / "backup_conversations_old.json"
    legacy.write_text(json_util.dumps(docs[1:4], json_options=json_util.CANONICAL_JSON_OPTIONS))
    report = restore_from_backup(str(legacy), "conversations")
    assert report["inserted"] == 3 and report["verified"]
    # the seed's envelope, nested under collections
    envelope = tmp_path / "export.json"
    text = json_util.dumps({"backup_metadata": {}, "collections": {"conversations": docs[:6]}})
    envelope.write_bytes(b"\xef\xbb\xbf" + text.encode())  # with a BOM, as Windows tools write
    report = restore_from_backup(str(envelope), "conversations", dry_run=True)
    assert report["inserted"] == 2 and report["skipped"] == 4
    assert db["conversations"].count_documents({}) == 4
    # each call is in the audit log, like a command: a change says first that it starts
    settings = mock_setup[0]
    lines = [json.loads(x) for x in settings.path(settings.audit.path).read_text().splitlines()]
    python = [(e["action"], e["outcome"]) for e in lines if e["via"] == "python"]
    assert python == [("restore_from_backup", "started"), ("restore_from_backup", "ok")] * 2 + [
        ("restore_from_backup", "ok")  # the dry run changes nothing: one line
    ]


def test_cli_restore_dry_run_restore_and_rollback_against_the_server(
    settings: Settings,
    mongo_db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed_database(mongo_db, 25, seed=22)
    cfg = use_settings(monkeypatch, tmp_path, settings)

    def cli(*args: str) -> int:
        return main(["--config", str(cfg), *args])

    bid = (
        BackupEngine(
            settings,
            mongo_db,
            BackupStore(settings.backup_dir),
            KeyRing([Key(base64.b64decode(settings.backup_key or ""))]),
        )
        .run("full", ["conversations"], include_files=False)
        .backup_id
    )
    mongo_db["conversations"].delete_many(
        {"session_id": {"$in": ["sess-0022-0000001", "sess-0022-0000002"]}}
    )
    assert cli("restore", bid, "--collection", "conversations", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["inserted"] == 2 and dry["rollback_id"] is None
    assert mongo_db["conversations"].count_documents({}) == 23
    assert cli("restore", "latest", "--collection", "conversations", "--json") == 0
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] and mongo_db["conversations"].count_documents({}) == 25
    assert cli("rollback", done["rollback_id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["verified"]
    assert mongo_db["conversations"].count_documents({}) == 23
    assert cli("restore", bid, "--collection", "conversations", "--date-from", "soon") == 1
    assert "not a date" in capsys.readouterr().err
    assert cli("rollback", bid) == 1
    assert "not a rollback point" in capsys.readouterr().err


def test_restore_latest_finds_the_newest_backup_holding_that_collection(
    mock_setup: tuple[Settings, Any, str],
) -> None:
    s, db, bid = mock_setup  # a full of conversations only
    from bmc_pipeline.engine.deployment import Deployment
    from bmc_pipeline.engine.restore import RestoreEngine

    d = Deployment(s)
    BackupEngine(s, db, d.store(), d.keyring()).run("full", ["quotes"], include_files=False)
    db["conversations"].drop()
    report = RestoreEngine(s, db, d.store(), d.keyring()).restore("latest", "conversations")
    assert report.backup_id == bid and report.verified and report.inserted == 30
