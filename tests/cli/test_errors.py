"""A failure keeps its own kind end to end: the exit code and HTTP status declared on its class.

The case that used to go wrong: a remote copy that fails inside a backup run came back from
Dagster as a plain error (exit 1, HTTP 400) instead of a remote-store error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bmc_pipeline.api.app import create_app
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine import errors as E
from tests.support import write_config


@pytest.fixture
def broken_remote(mock_settings: Settings, seeded: dict[str, int]) -> Settings:
    """Seeded settings whose remote copy cannot be written (a directory under /dev/null)."""
    storage = mock_settings.storage.model_copy(update={"remote_url": "file:///dev/null/offsite"})
    return mock_settings.model_copy(update={"storage": storage})


def test_every_engine_error_declares_an_exit_code_and_an_http_status() -> None:
    for cls in [E.BmcError, *E.BmcError.__subclasses__()]:
        assert 1 <= cls.exit_code < 126, cls  # 126 and up mean other things to a shell
        assert 400 <= cls.http_status <= 599, cls
    assert E.error_class("RemoteError") is E.RemoteError
    assert E.error_class("NoSuchThing") is E.BmcError


def test_a_remote_copy_failure_in_a_backup_exits_with_the_remote_code(
    broken_remote: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(write_config(broken_remote, tmp_path / "config.json"))
    assert main(["--config", cfg, "backup", "--no-files"]) == E.RemoteError.exit_code == 6
    err = capsys.readouterr().err
    assert err.startswith("bmc-backup: full backup failed (run ") and "offsite" in err

    assert main(["--config", cfg, "backup", "--no-files", "--json"]) == 6
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert out["error"]["type"] == "RemoteError" and out["error"]["exit_code"] == 6


def test_a_remote_copy_failure_in_a_backup_maps_to_its_http_status(
    broken_remote: Settings,
) -> None:
    secret, _ = TokenStore.for_settings(broken_remote).create("ops", "admin")
    with TestClient(create_app(broken_remote), base_url="https://testserver") as client:
        r = client.post("/api/recovery/backup", headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == E.RemoteError.http_status == 502, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
