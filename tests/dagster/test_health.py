"""The health dashboard: success rates from real runs, restores, and open alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert, LogFileChannel
from bmc_pipeline.engine.crypto import Key
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.launch import run_backup
from tests.support import unreachable, write_config


def test_status_reports_success_rate_restores_and_open_alerts(
    mock_settings: Settings,
    mock_db: Any,
    tmp_path: Path,
    key: Key,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s, db = mock_settings, mock_db
    seed_database(db, 10, seed=4)
    ok = run_backup(s, "full", ["quotes"], include_files=False)
    down = unreachable(s)
    with pytest.raises(BmcError):
        run_backup(down, "full", ["quotes"], include_files=False)
    d = Deployment(s)
    db["quotes"].drop()
    rid = (
        RestoreEngine(s, db, d.store(), d.keyring()).restore(ok["backup_id"], "quotes").rollback_id
    )
    log = LogFileChannel(s.path(s.alerts.log_file))
    log.send(
        Alert(key="stale:context", severity="critical", title="no full backup of context", text="")
    )
    log.send(Alert(key="space", severity="critical", title="low space", text=""))
    log.send(Alert(key="space", severity="resolved", title="resolved: low space", text=""))

    cfg = write_config(s, tmp_path / "cfg.json")
    assert main(["--config", str(cfg), "status", "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    assert h["backup_runs_7d"] == 2 and h["backup_success_rate_7d"] == 0.5
    assert [r["rollback_id"] for r in h["restores"]] == [rid]
    assert h["restores"][0]["restore_of"] == ok["backup_id"]
    assert [a["key"] for a in h["open_alerts"]] == ["stale:context"]
    assert len(h["alert_timeline"]) == 3 and h["backups"] == 1 and h["storage_bytes"] > 0

    assert main(["--config", str(cfg), "status"]) == 0
    text = capsys.readouterr().out
    assert (
        "backup success rate, 7 days | 50 % (2 runs)" in text
        and "no full backup of context" in text
    )

    from bmc_pipeline.definitions import build_definitions

    defs = build_definitions(s)
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("health_job").execute_in_process(instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("backups__health")
    assert mat.metadata["backup_success_rate_7d"].value == 0.5
    assert mat.metadata["open_alerts"].value == 1
