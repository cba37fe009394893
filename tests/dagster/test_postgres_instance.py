"""Dagster on PostgreSQL, as `bmc-backup setup --postgres-url` configures it: a backup and a
restore run store their runs and events in a real PostgreSQL server (started by the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dagster_postgres", reason="the postgres extra: pip install -e '.[postgres]'")

from bmc_pipeline.config import Settings
from bmc_pipeline.launch import run_backup, run_op_job
from tests.support.postgres import dagster_home_on, postgres_server


def test_runs_and_their_events_are_stored_in_postgresql(
    mock_settings: Settings, seeded: dict[str, int], tmp_path: Path, monkeypatch: Any
) -> None:
    import psycopg2

    with postgres_server() as url:
        home = tmp_path / "dagster"
        for k, v in dagster_home_on(url, home).items():
            monkeypatch.setenv(k, v)
        settings = mock_settings.model_copy(update={"dagster_home": str(home)})
        summary = run_backup(settings, "full", include_files=False)
        restore = run_op_job(
            settings, "restore_job", "restore_op",
            {"backup_id": summary["backup_id"], "collection": "quotes", "dry_run": True},
            launched_by="test",
        )  # fmt: skip
        assert restore.output["dry_run"] and restore.output["inserted"] == 0
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("select pipeline_name, status from runs order by create_timestamp")
            runs = cur.fetchall()
            cur.execute("select count(*) from event_logs where run_id = %s", (restore.run_id,))
            (events,) = cur.fetchone()
        assert runs == [("full_backup_job", "SUCCESS"), ("restore_job", "SUCCESS")]
        assert events > 5
        assert not list(home.glob("*.db")) and not (home / "history").exists()  # nothing in SQLite
