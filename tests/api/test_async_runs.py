"""A long restore over HTTP is a job: 202 at once, a run to follow, the same report at the end."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi.testclient import TestClient

from bmc_pipeline.api.app import create_app
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupResult


def _follow(c: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        r = c.get(url, headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] != "running":
            return dict(r.json())
        assert time.monotonic() < deadline, "the run did not end in two minutes"
        time.sleep(0.2)


def test_a_restore_answered_at_once_and_followed_gives_the_synchronous_report(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult
) -> None:
    token = TokenStore.for_settings(mock_settings).create("alice", "admin")[0]
    admin = {"authorization": f"Bearer {token}"}
    api = mock_settings.api.model_copy(update={"rate_limit_get": "1000/minute"})
    settings = mock_settings.model_copy(update={"api": api})
    body = {"backup_file": full_backup.backup_id, "target_collection": "quotes", "dry_run": False}
    mock_db.quotes.delete_many({})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/recovery/restore", json=body, headers={**admin, "prefer": "respond-async"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert r.headers["location"] == accepted["status_url"]
        assert accepted["status_url"] == f"/api/recovery/runs/{accepted['run_id']}"
        done = _follow(c, accepted["status_url"], admin)
        assert done["status"] == "succeeded" and done["kind"] == "restore" and done["finished"]
        report = done["result"]["report"]
        assert report["verified"] and report["restored"] == mock_db.quotes.count_documents({}) > 0
        assert done["result"]["run_id"] == accepted["run_id"]
        # the same rollback, also as a job; a rollback that cannot run fails with its status
        rollback = {"rollback_id": report["rollback_id"]}
        r = c.post(
            "/api/recovery/rollback", json=rollback, headers={**admin, "prefer": "respond-async"}
        )
        undone = _follow(c, r.json()["status_url"], admin)
        assert undone["status"] == "succeeded" and undone["result"]["result"]["verified"]
        assert mock_db.quotes.count_documents({}) == 0
        r = c.post(
            "/api/recovery/rollback",
            json={"rollback_id": "20260101T000000Z-rollback-abcdef"},
            headers={**admin, "prefer": "respond-async"},
        )
        failed = _follow(c, r.json()["status_url"], admin)
        assert failed["status"] == "failed" and failed["error"]["status"] == 404
        unknown = "/api/recovery/runs/00000000-0000-4000-8000-000000000000"
        assert c.get(unknown, headers=admin).status_code == 404
        # without the preference: the synchronous answer, as always
        body["dry_run"] = True
        r = c.post("/api/recovery/restore", json=body, headers=admin)
        assert r.status_code == 200 and r.json()["report"]["dry_run"]
    lines = [json.loads(x) for x in settings.path(settings.audit.path).read_text().splitlines()]
    finished = [(e["action"], e["outcome"]) for e in lines if e["action"].endswith(" finished")]
    assert finished == [("restore finished", "ok"), ("rollback finished", "ok"),
                        ("rollback finished", "error")]  # fmt: skip


def test_a_backup_answered_at_once_gives_the_synchronous_answer_and_holds_the_backup_lock(
    mock_settings: Settings, mock_db: Any, seeded: dict[str, int]
) -> None:
    token = TokenStore.for_settings(mock_settings).create("alice", "admin")[0]
    admin = {"authorization": f"Bearer {token}"}
    api = mock_settings.api.model_copy(update={"rate_limit_get": "1000/minute"})
    settings = mock_settings.model_copy(update={"api": api})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/recovery/backup?type=full", headers={**admin, "prefer": "respond-async"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert r.headers["location"] == accepted["status_url"]
        done = _follow(c, accepted["status_url"], admin)
        assert done["status"] == "succeeded" and done["kind"] == "backup"
        created = done["result"]
        assert created["run_id"] == accepted["run_id"] and created["type"] == "full"
        assert created["collections"]["quotes"]["documents"] == seeded["quotes"]
        # the synchronous form answers with the same fields
        r = c.post("/api/recovery/backup?type=incremental", headers=admin)
        assert r.status_code == 200 and set(r.json()) == set(created)
        # a collection that is not configured is refused at once, not after a 202
        r = c.post(
            "/api/recovery/backup?collection=orders", headers={**admin, "prefer": "respond-async"}
        )
        assert r.status_code == 404 and "not in backup_config.json" in r.json()["detail"]
        # and the backup it made is listed
        listed = c.get("/api/recovery/backups", headers=admin).json()["backups"]
        assert created["backup_id"] in {b["backup_id"] for b in listed}


def test_a_drill_over_http_synchronous_or_followed(
    mock_settings: Settings, seeded: dict[str, int], full_backup: BackupResult
) -> None:
    token = TokenStore.for_settings(mock_settings).create("alice", "admin")[0]
    admin = {"authorization": f"Bearer {token}"}
    api = mock_settings.api.model_copy(update={"rate_limit_get": "1000/minute"})
    settings = mock_settings.model_copy(update={"api": api})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/recovery/drill", headers=admin)
        assert r.status_code == 200, r.text
        sync = r.json()
        assert sync["report"]["ok"] and sync["report"]["documents"] == sum(seeded.values())
        r = c.post("/api/recovery/drill", headers={**admin, "prefer": "respond-async"})
        assert r.status_code == 202, r.text
        done = _follow(c, r.json()["status_url"], admin)
        assert done["status"] == "succeeded" and done["kind"] == "drill"
        assert done["result"]["report"]["ok"] and done["result"]["run_id"] == r.json()["run_id"]
        assert set(done["result"]["report"]) == set(sync["report"])
