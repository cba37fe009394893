"""An incident walked through the API end to end, as an engineer would: ``bmc-backup api serve``
in its own process over HTTPS against a real server (FerretDB or ``MONGODB_URI``).

The walk runs once (a module-scoped fixture) and records every answer; each test below checks one
step, so a step that goes wrong does not hide what the others did.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX
from bmc_pipeline.engine.audit import AuditLog
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.scanner import REPORT_FORMAT
from tests.support import make_settings, write_config
from tests.support.apiserver import Tls, clean_env, client, make_tls, process_server


@dataclass
class Walk:
    """What the walk did and what it was answered, step by step."""

    settings: Settings
    key: Key
    counts: dict[str, int]
    r: dict[str, httpx.Response] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)  # database state observed along the way


def _step(walk: Walk, name: str, response: httpx.Response) -> dict[str, Any]:
    walk.r[name] = response
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str) -> Iterator[Walk]:
    tmp = tmp_path_factory.mktemp("incident")
    key, db_name = Key(os.urandom(32)), f"bmc_incident_{os.getpid()}"
    s = make_settings(tmp, mongo_uri, db_name, key)
    s = s.model_copy(
        update={
            "api": s.api.model_copy(
                update={"rate_limit_get": "1000/minute", "rate_limit_post": "1000/minute"}
            )
        }
    )
    db = connect(mongo_uri)[db_name]
    w = Walk(s, key, seed_database(db, conversations=40, seed=3))
    tokens = TokenStore.for_settings(s)
    admin = tokens.create("alice", "admin")[0]
    viewer = tokens.create("carol", "viewer")[0]
    env = clean_env(BMC_BACKUP_KEY=base64.b64encode(key.material).decode())
    tls = make_tls(tmp / "tls")
    try:
        with process_server(write_config(s, tmp / "config.json"), tls, env) as url:
            with client(url, tls, admin) as c:
                _walk(w, c, db)
            _strangers(w, url, tls, viewer)
        yield w
    finally:
        connect(mongo_uri).drop_database(db_name)


def _walk(w: Walk, c: httpx.Client, db: Any) -> None:
    w.r["openapi"] = c.get("/api/openapi.json")
    full = _step(w, "full", c.post("/api/recovery/backup", params={"type": "full"}))
    inc = _step(w, "incremental", c.post("/api/recovery/backup", params={"type": "incremental"}))
    w.r["get_backup"] = c.get("/api/recovery/backup", params={"type": "full"})
    w.r["list_one"] = c.get("/api/recovery/backups", params={"limit": 1})
    w.r["list_full"] = c.get("/api/recovery/backups", params={"type": "full"})
    w.r["validate"] = c.get(f"/api/recovery/validate/{full['backup_id']}")
    # the incident: a dropped collection; a dry run first, then the restore
    db.drop_collection("conversations")
    body = {"backup_file": inc["backup_id"], "target_collection": "conversations"}
    _step(w, "dry_run", c.post("/api/recovery/restore", json=body))
    w.seen["after_dry_run"] = db["conversations"].count_documents({})
    restored = _step(w, "restore", c.post("/api/recovery/restore", json={**body, "dry_run": False}))
    w.seen["after_restore"] = db["conversations"].count_documents({})
    # a filtered restore with a query into another collection
    query = {"status": {"$in": ["accepted"]}}
    w.r["filtered"] = c.post(
        "/api/recovery/restore",
        json={"backup_file": "latest", "collection": "quotes", "target_collection": "quotes_review",
              "dry_run": False, "filters": {"query": query}},
    )  # fmt: skip
    w.seen["accepted"] = db["quotes"].count_documents({"status": "accepted"})
    w.seen["quotes_review"] = db["quotes_review"].count_documents({})
    rollback_id = restored.get("report", {}).get("rollback_id")
    w.r["rollback"] = c.post("/api/recovery/rollback", json={"rollback_id": rollback_id})
    w.seen["after_rollback"] = db["conversations"].count_documents({})
    w.r["status"] = c.get("/api/recovery/status")
    w.r["scan"] = c.get("/api/recovery/scan", params={"source": "mongodb"})
    # deletion: confirmation required, guards apply, then it goes
    target, incremental = full["backup_id"], inc["backup_id"]
    path = f"/api/recovery/backups/{target}"
    w.r["delete_unconfirmed"] = c.delete(path)
    w.r["delete_wrong_confirm"] = c.delete(path, params={"confirm": incremental})
    w.r["delete_newest_full"] = c.delete(path, params={"confirm": target})
    second = _step(w, "second_full", c.post("/api/recovery/backup", params={"type": "full"}))
    w.r["delete_needed_parent"] = c.delete(path, params={"confirm": target})
    w.r["delete_incremental"] = c.delete(
        f"/api/recovery/backups/{incremental}", params={"confirm": incremental}
    )
    w.r["delete_full"] = c.delete(path, params={"confirm": target})
    w.r["validate_deleted"] = c.get(f"/api/recovery/validate/{target}")
    w.r["list_after_delete"] = c.get("/api/recovery/backups")
    w.seen["second"] = second.get("backup_id")


def _strangers(w: Walk, url: str, tls: Tls, viewer: str) -> None:
    with client(url, tls) as anon:
        w.r["anonymous"] = anon.get("/api/recovery/backups")
    with client(url, tls, "bmc_not-a-real-token") as wrong:
        w.r["wrong_token"] = wrong.get("/api/recovery/backups")
    with client(url, tls, viewer) as c:
        w.r["viewer"] = c.get("/api/recovery/backups")


def test_backups_are_made_through_the_api_as_dagster_runs(walk: Walk) -> None:
    assert walk.r["openapi"].json()["info"]["title"].startswith("bmc-backup")
    r = walk.r["full"]
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["type"] == "full" and first["size_bytes"] > 0
    assert first["collections"]["conversations"]["documents"] == walk.counts["conversations"]
    assert first["path"].endswith(".json") and not first["path"].startswith("/")
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")
    assert walk.r["incremental"].status_code == 200, walk.r["incremental"].text
    # a GET never makes a backup (a link followed, a prefetch, a crawler): only POST does
    assert walk.r["get_backup"].status_code == 405


def test_listing_pages_and_filters_by_type(walk: Walk) -> None:
    listing = walk.r["list_one"].json()
    assert listing["total"] == 2 and listing["count"] == 1
    assert listing["backups"][0]["backup_id"] == walk.r["incremental"].json()["backup_id"]
    assert listing["next_offset"] == 1
    full_only = walk.r["list_full"].json()
    assert [b["backup_id"] for b in full_only["backups"]] == [walk.r["full"].json()["backup_id"]]


def test_validation_reads_every_archive(walk: Walk) -> None:
    v = walk.r["validate"].json()
    assert v["ok"] and v["manifest_ok"]
    assert f"conversations{ARCHIVE_SUFFIX}" in {f["file"].split("/")[-1] for f in v["files"]}


def test_a_dry_run_writes_nothing_and_the_restore_brings_everything_back(walk: Walk) -> None:
    dry = walk.r["dry_run"].json()
    assert dry["report"]["dry_run"] is True and dry["report"]["restored"] == 40
    assert walk.seen["after_dry_run"] == 0
    done = walk.r["restore"]
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["validation"]["verified"] is True
    assert result["report"]["inserted"] == walk.counts["conversations"]
    assert walk.seen["after_restore"] == walk.counts["conversations"]


def test_a_filtered_restore_into_another_collection_takes_only_what_matches(walk: Walk) -> None:
    r = walk.r["filtered"]
    assert r.status_code == 200, r.text
    accepted = walk.seen["accepted"]
    assert 0 < accepted < walk.counts["quotes"]
    assert r.json()["report"]["restored"] == accepted == walk.seen["quotes_review"]


def test_the_rollback_undoes_the_restore(walk: Walk) -> None:
    rb = walk.r["rollback"]
    assert rb.status_code == 200, rb.text
    assert rb.json()["result"]["verified"] is True
    assert walk.seen["after_rollback"] == 0


def test_status_and_scan_answer(walk: Walk) -> None:
    assert walk.r["status"].status_code == 200, walk.r["status"].text
    health = walk.r["status"].json()
    assert health["backups"] == 2 and health["backup_runs_7d"] == 2
    assert health["restores_30d"] == 2  # the two restores above left rollback points
    assert walk.r["scan"].status_code == 200, walk.r["scan"].text
    assert walk.r["scan"].json()["report"]["format"] == REPORT_FORMAT


def test_deletion_needs_confirmation_respects_the_guards_then_deletes(walk: Walk) -> None:
    target = walk.r["full"].json()["backup_id"]
    incremental = walk.r["incremental"].json()["backup_id"]
    r = walk.r["delete_unconfirmed"]
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "confirm"]
    r = walk.r["delete_wrong_confirm"]
    assert r.status_code == 400 and f"?confirm={target}" in r.json()["detail"]
    r = walk.r["delete_newest_full"]
    assert r.status_code == 409, r.text
    assert "newest full backup" in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    r = walk.r["delete_needed_parent"]
    assert r.status_code == 409 and f"needed by {incremental}" in r.json()["detail"]
    r = walk.r["delete_incremental"]
    assert r.status_code == 200 and r.json() == {"backup_id": incremental, "deleted": True}
    assert walk.r["delete_full"].status_code == 200, walk.r["delete_full"].text
    r = walk.r["validate_deleted"]
    assert r.status_code == 404
    assert "/" not in r.json()["detail"].split("not found in")[-1].split(";")[0].strip()
    remaining = [b["backup_id"] for b in walk.r["list_after_delete"].json()["backups"]]
    assert walk.seen["second"] in remaining and target not in remaining


def test_no_token_a_wrong_one_or_a_viewer_are_refused(walk: Walk) -> None:
    r = walk.r["anonymous"]
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert walk.r["wrong_token"].status_code == 401
    r = walk.r["viewer"]
    assert r.status_code == 403 and "admin-only" in r.json()["detail"]


def test_the_runs_are_in_dagsters_history_launched_by_the_token(
    walk: Walk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", walk.settings.dagster_home)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
    launched = {(r.dagster_run.job_name, r.dagster_run.tags.get("bmc/launched_by")) for r in runs}
    for job in ("full_backup_job", "restore_job", "rollback_job"):
        assert (job, "api:token:alice") in launched


def test_every_request_and_run_is_in_the_audit_log_whose_chain_verifies(walk: Walk) -> None:
    import json

    s = walk.settings
    lines = [json.loads(x) for x in Path(s.path(s.audit.path)).read_text().splitlines()]
    api = [e for e in lines if e["via"] == "api"]
    assert {"POST /api/recovery/backup", "POST /api/recovery/restore"} <= {e["action"] for e in api}
    assert any(e["actor"] == "anonymous" and e["extra"]["status"] == 401 for e in api)
    assert any(e["actor"] == "token:carol" and e["extra"]["status"] == 403 for e in api)
    runs_logged = [e for e in lines if e["via"] == "dagster"]
    assert {"full backup", "incremental backup", "restore", "rollback"} <= {
        e["action"] for e in runs_logged
    }
    assert all(e["actor"] == "api:token:alice" for e in runs_logged)
    assert AuditLog(s.path(s.audit.path), KeyRing([walk.key])).verify().ok
