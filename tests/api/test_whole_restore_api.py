"""A whole backup point through the API and through restore_job's config: every collection and
the files, one run, one rollback point (mongomock, the app in process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from fastapi.testclient import TestClient

from bmc_pipeline.api.app import create_app
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.backup import BackupResult

COLLECTIONS = {"analytics", "context", "conversations", "quotes", "sessions"}


def test_the_api_restores_every_collection_and_the_files_under_one_rollback_point(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, seeded: dict[str, int]
) -> None:
    for name in COLLECTIONS:
        mock_db.drop_collection(name)
    kb = Path(mock_settings.files_root) / "conocimiento_consolidado.json"
    kb.unlink()
    secret, _ = TokenStore.for_settings(mock_settings).create("ops", "admin")
    headers = {"authorization": f"Bearer {secret}"}
    body = {"backup_file": full_backup.backup_id, "collections": [], "files": True}
    with TestClient(create_app(mock_settings), base_url="https://testserver") as client:
        dry = client.post("/api/recovery/restore", json=body, headers=headers)
        assert dry.status_code == 200, dry.text
        assert dry.json()["report"]["dry_run"] and not kb.exists()
        done = client.post(
            "/api/recovery/restore", json={**body, "dry_run": False}, headers=headers
        )
        assert done.status_code == 200, done.text
        report = done.json()["report"]
        assert done.json()["validation"]["verified"] is True
        assert set(report["collections"]) == COLLECTIONS and report["files"]["restored"] == 1
        assert {n: mock_db[n].count_documents({}) for n in COLLECTIONS} == seeded
        assert kb.exists()
        rb = client.post(
            "/api/recovery/rollback", json={"rollback_id": report["rollback_id"]}, headers=headers
        )
        assert rb.status_code == 200 and rb.json()["result"]["verified"], rb.text
        assert not kb.exists() and mock_db["quotes"].count_documents({}) == 0
        everything = client.post("/api/recovery/restore", json={}, headers=headers)
        assert everything.status_code == 200, everything.text  # a dry run of the whole point
        assert set(everything.json()["report"]["collections"]) == COLLECTIONS


def test_restore_job_takes_a_list_of_collections(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, seeded: dict[str, int]
) -> None:
    mock_db.drop_collection("quotes")
    mock_db.drop_collection("sessions")
    job = build_definitions(mock_settings).resolve_job_def("restore_job")
    config = {"backup_id": full_backup.backup_id, "collections": ["quotes", "sessions"],
              "dry_run": False}  # fmt: skip
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"ops": {"restore_op": {"config": config}}}
        )
    assert result.success
    report = result.output_for_node("restore_op")
    assert report["verified"] and set(report["collections"]) == {"quotes", "sessions"}
    assert mock_db["quotes"].count_documents({}) == seeded["quotes"]


def test_a_scan_through_the_api_shows_no_server_path(
    mock_settings: Settings, seeded: dict[str, int]
) -> None:
    root = Path(mock_settings.files_root)
    (root / "backups").mkdir(exist_ok=True)
    (root / "backups" / "backup_old.json").write_text('[{"session_id": "s-1", "messages": []}]')
    secret, _ = TokenStore.for_settings(mock_settings).create("ops", "admin")
    with TestClient(create_app(mock_settings), base_url="https://testserver") as client:
        r = client.get(
            "/api/recovery/scan", params={"source": "filesystem"},
            headers={"authorization": f"Bearer {secret}"},
        )  # fmt: skip
    assert r.status_code == 200, r.text
    report = r.json()["report"]
    assert report["root"] == "."
    assert "backups/backup_old.json" in {f["path"] for f in report["files"]}
    assert str(root.resolve()) not in r.text and str(root) not in r.text
