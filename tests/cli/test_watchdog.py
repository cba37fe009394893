"""``status --check``: the watchdog outside the daemon. Healthy gives 0; a stale daemon heartbeat,
a backup past its threshold or a failed drill gives 1 and says which."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat  # no public constructor for a heartbeat

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.store import BackupStore
from tests.support import write_config


@pytest.fixture
def cli(
    mock_settings: Settings,
    full_backup: BackupResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    monkeypatch.setenv("DAGSTER_HOME", str(Path(mock_settings.dagster_home).resolve()))
    cfg = str(write_config(mock_settings, tmp_path / "config.json"))

    def run(*args: str) -> tuple[int, str]:
        code = main(["--config", cfg, *args])
        return code, capsys.readouterr().out

    return run


def _heartbeats(settings: Settings, age_s: float) -> None:
    Path(settings.dagster_home).mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.get() as instance:
        for daemon in ("SCHEDULER", "SENSOR"):
            instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - age_s, daemon, None))


def test_all_healthy_is_0_and_a_stale_daemon_is_1_naming_it(
    mock_settings: Settings, cli: Any
) -> None:
    code, _ = cli("status", "--check")
    assert code == 1  # no drill yet, and no daemon: both named
    code, out = cli("drill")
    assert code == 0, out
    _heartbeats(mock_settings, 5)
    code, out = cli("status", "--check")
    assert code == 0 and out.strip().endswith("all is well"), out

    _heartbeats(mock_settings, 3600)
    code, out = cli("status", "--check")
    assert code == 1 and "the Dagster daemon is not running" in out and "SCHEDULER" in out

    code, out = cli("status", "--format", "prometheus")
    assert code == 0 and "bmc_backup_ok 0" in out and "bmc_drill_last_ok 1" in out
    assert 'bmc_backup_documents{collection="quotes"}' in out


def test_a_backup_past_its_threshold_is_named(
    mock_settings: Settings, mock_db: Any, keyring: KeyRing, cli: Any
) -> None:
    assert cli("drill")[0] == 0
    _heartbeats(mock_settings, 5)
    code, out = cli("status", "--json")
    h = json.loads(out)
    assert code == 0 and h["problems"] == [] and h["daemon"]["running"]
    assert {r["collection"] for r in h["collections"]} >= {"quotes", "conversations"}
    assert all(r["last_drill_ok"] for r in h["collections"])

    # a store whose only full backup is three days old
    old = datetime.now(timezone.utc) - timedelta(days=3)
    for ref in BackupStore(mock_settings.backup_dir).refs():
        BackupStore(mock_settings.backup_dir).delete(ref)
    BackupEngine(mock_settings, mock_db, BackupStore(mock_settings.backup_dir), keyring).run(
        "full", now=old, include_files=False
    )
    code, out = cli("status", "--check")
    assert code == 1
    assert "quotes: newest full backup is 72.0 h old" in out
    assert "threshold alerts.stale_full_hours 24 h" in out
