"""The audit log cannot be flooded by strangers, and a change it cannot record is not made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bmc_pipeline.api.app import create_app
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.errors import AuditWriteError
from tests.support import write_config


def _lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.path(settings.audit.path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_flood_of_anonymous_requests_adds_a_few_bounded_lines(mock_settings: Settings) -> None:
    """220 POSTs of 4,500 keys each to a path that does not exist, without a token: the address's
    write budget (5) lets five through, each recorded as a summary; the other 215 are one line."""
    audit = mock_settings.path(mock_settings.audit.path)
    flood = json.dumps({f"k{i:04d}": "x" for i in range(4500)})
    assert 50_000 < len(flood) < mock_settings.api.max_body_bytes
    statuses = []
    with TestClient(create_app(mock_settings)) as c:
        for _ in range(220):
            headers = {"content-type": "application/json"}
            statuses.append(c.post("/no/such/path", content=flood, headers=headers).status_code)
    assert statuses[:5] == [404] * 5 and set(statuses[5:]) == {429}
    assert audit.stat().st_size < 12_000, audit.stat().st_size  # about 6 lines, not 13 MB
    lines = _lines(mock_settings)
    assert len(lines) == 6
    for line in lines[:5]:
        body = line["params"]["body"]
        assert body["fields"] == 4500 and body["bytes"] == len(flood)
        assert body["first_fields"] == [f"k{i:04d}" for i in range(8)]
        assert "request" not in line["params"]  # a stranger's body is never kept
    tally = lines[5]
    assert tally["action"] == "refused requests" and tally["actor"] == "anonymous"
    assert tally["extra"]["count"] == 215 and tally["params"]["paths"] == {"/no/such/path": 215}


def test_an_admin_request_keeps_its_small_parameters_and_says_when_it_started(
    mock_settings: Settings,
) -> None:
    token = TokenStore.for_settings(mock_settings).create("alice", "admin")[0]
    with TestClient(create_app(mock_settings)) as c:
        r = c.post(
            "/api/recovery/rollback",
            json={"rollback_id": "rb_20260101T000000Z_nope"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert r.status_code in (404, 422), r.text
    started, done = _lines(mock_settings)
    assert started["outcome"] == "started" and started["actor"] == "token:alice"
    assert started["params"]["request"] == {"rollback_id": "rb_20260101T000000Z_nope"}
    assert (
        done["outcome"] == "refused" and done["params"]["request"] == started["params"]["request"]
    )


def _blocked(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose audit log cannot be written: its directory is a regular file."""
    (tmp_path / "blocked").write_text("not a directory")
    audit = settings.audit.model_copy(update={"path": str(tmp_path / "blocked" / "audit.log")})
    return settings.model_copy(update={"audit": audit})


def test_a_change_the_audit_log_cannot_record_is_not_made(
    mock_settings: Settings, seeded: dict[str, int], tmp_path: Path
) -> None:
    settings = _blocked(mock_settings, tmp_path)
    token = TokenStore.for_settings(settings).create("alice", "admin")[0]
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/recovery/backup", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 503, r.text
        assert "audit log cannot be written" in r.json()["detail"]
        assert "nothing was done" in r.json()["detail"]
        assert str(tmp_path) not in r.text  # no server paths over HTTP
        # reading goes on: nothing changes, and a read that could not be recorded is logged
        r = c.get("/api/recovery/backups", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["backups"] == []
    assert not list(settings.backup_dir.rglob("manifest.json"))

    cfg = str(write_config(settings, tmp_path / "config.json"))
    assert main(["--config", cfg, "backup", "--no-files"]) == AuditWriteError.exit_code == 10
    assert not list(settings.backup_dir.rglob("manifest.json"))
    assert main(["--config", cfg, "list"]) == 0  # read-only commands still run
