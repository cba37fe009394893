"""The Dagster definitions: they load, resolve, keep their asset keys, and schedule correctly."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.crypto import Key
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.launch import run_backup
from tests.support import ROOT, make_settings, unreachable, write_config

# Renaming an asset orphans its history in the Dagster instance: this list changes on purpose only.
PARTS = ("conversations", "quotes", "sessions", "context", "analytics", "files", "backup_set")
EXPECTED_ASSET_KEYS = sorted(
    [f"backups/{t}/{name}" for t in ("full", "incremental") for name in PARTS]
    + ["backups/retention", "backups/health", "backups/drill"]
    + [f"capture/{c}" for c in ("analytics", "context", "conversations", "quotes", "sessions")]
)


def test_definitions_load_and_every_job_and_schedule_resolves(mock_settings: Settings) -> None:
    defs = build_definitions(mock_settings)
    dg.Definitions.validate_loadable(defs)
    for name in (
        "full_backup_job",
        "incremental_backup_job",
        "restore_job",
        "rollback_job",
        "scan_job",
        "drill_job",
    ):
        assert defs.resolve_job_def(name) is not None
    for sched in ("full_backup_daily", "incremental_backup_6h", "retention_daily", "health_hourly",
                  "drill_daily"):  # fmt: skip
        assert defs.resolve_schedule_def(sched).default_status == dg.DefaultScheduleStatus.RUNNING


def test_asset_keys_snapshot(mock_settings: Settings) -> None:
    defs = build_definitions(mock_settings)
    keys = sorted(k.to_user_string() for k in defs.resolve_all_asset_keys())
    assert keys == EXPECTED_ASSET_KEYS


def test_the_workspace_loads_the_code_location_as_dagster_does(tmp_path: Path) -> None:
    """``dagster definitions validate`` loads workspace.yaml the way the UI and daemon do."""
    import subprocess
    import sys

    from bmc_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs())
    assert (ROOT / "workspace.yaml").read_text().count("bmc_pipeline.definitions") == 1
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful for code location bmc_pipeline" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("schedule", "at", "partition"),
    [
        ("full_backup_daily", datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc), "2026-11-25"),
        (
            "incremental_backup_6h",
            datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc),
            "2026-11-25-06:00",
        ),
        (
            "incremental_backup_6h",
            datetime(2026, 11, 25, 18, 0, tzinfo=timezone.utc),
            "2026-11-25-18:00",
        ),
    ],
)
def test_schedule_ticks_request_the_expected_partition(
    mock_settings: Settings, schedule: str, at: datetime, partition: str
) -> None:
    from datetime import date

    schedules = mock_settings.schedules.model_copy(update={"start_date": date(2026, 11, 1)})
    defs = build_definitions(mock_settings.model_copy(update={"schedules": schedules}))
    sched = defs.resolve_schedule_def(schedule)
    result = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at))
    assert result.run_requests is not None and len(result.run_requests) == 1
    assert result.run_requests[0].partition_key == partition


def test_schedules_fire_at_the_documented_times(mock_settings: Settings) -> None:
    defs = build_definitions(mock_settings)
    assert defs.resolve_schedule_def("full_backup_daily").cron_schedule == "0 2 * * *"
    assert defs.resolve_schedule_def("incremental_backup_6h").cron_schedule == "0 */6 * * *"
    assert defs.resolve_schedule_def("retention_daily").cron_schedule == "0 3 * * *"


def test_schedule_times_come_from_the_configuration_and_are_shown(mock_settings: Settings) -> None:
    schedules = mock_settings.schedules.model_copy(
        update={"full_backup_at": "05:30", "incremental_every_hours": 4, "retention": "15 6 * * *"}
    )
    defs = build_definitions(mock_settings.model_copy(update={"schedules": schedules}))
    full = defs.resolve_schedule_def("full_backup_daily")
    assert full.cron_schedule == "30 5 * * *" and "05:30 UTC" in (full.description or "")
    assert defs.resolve_schedule_def("incremental_backup_6h").cron_schedule == "0 */4 * * *"
    retention = defs.resolve_schedule_def("retention_daily")
    assert retention.cron_schedule == "15 6 * * *" and "15 6 * * *" in (retention.description or "")
    from bmc_pipeline.config import ScheduleSettings

    with pytest.raises(ValueError, match="not a time like '02:00'"):
        ScheduleSettings(full_backup_at="2am")


def test_backup_job_run_in_process_publishes_and_reports_metadata(mock_settings: Settings) -> None:
    db = connect(mock_settings.mongodb.uri)[mock_settings.mongodb.database]
    seed_database(db, 50, seed=9)
    write_files(mock_settings.files_root)
    summary = run_backup(mock_settings, "full")
    assert summary["collections"]["conversations"]["documents"] == 50
    assert summary["filesystem"]["files"] == 6
    refs = BackupStore(mock_settings.backup_dir).refs()
    assert [r.backup_id for r in refs] == [summary["backup_id"]]
    # the run is in the instance's history with its materialization metadata
    with dg.DagsterInstance.get() as instance:
        ev = instance.get_latest_materialization_event(
            dg.AssetKey(["backups", "full", "conversations"])
        )
        assert ev is not None and ev.asset_materialization is not None
        md = ev.asset_materialization.metadata
        for field in ("documents", "raw_bytes", "stored_bytes", "compression_ratio", "duration_s",
                      "docs_per_s", "backup_id", "path", "state_digest"):  # fmt: skip
            assert field in md, field
        assert md["backup_id"].value == summary["backup_id"]


def test_each_run_is_its_own_backup_point_even_for_the_same_partition(
    mock_settings: Settings,
) -> None:
    from datetime import date

    db = connect(mock_settings.mongodb.uri)[mock_settings.mongodb.database]
    seed_database(db, 5, seed=9)
    schedules = mock_settings.schedules.model_copy(update={"start_date": date(2026, 11, 1)})
    settings = mock_settings.model_copy(update={"schedules": schedules})
    a = run_backup(settings, "full", ["quotes"], include_files=False, partition_key="2026-11-20")
    b = run_backup(settings, "full", ["quotes"], include_files=False, partition_key="2026-11-20")
    assert a["backup_id"] != b["backup_id"]
    assert len(BackupStore(mock_settings.backup_dir).refs()) == 2


def test_failed_backup_run_fails_with_the_cause_and_publishes_nothing(
    tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bmc_pipeline.engine.errors import BmcError

    # a port where nothing listens: the run fails after its retries, with the collection named
    settings = unreachable(make_settings(tmp_path, "mongomock://unused", "x", key))
    monkeypatch.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
    with pytest.raises(BmcError, match=r"backup of collection 'conversations' failed"):
        run_backup(settings, "full", ["conversations"], include_files=False)
    assert BackupStore(settings.backup_dir).refs() == []


def test_cli_backup_and_list_against_the_server(
    settings: Settings, mongo_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from bmc_pipeline.cli import main

    seed_database(mongo_db, 40, seed=10)
    write_files(settings.files_root)
    cfg = write_config(settings, tmp_path / "cfg.json")
    os.environ["BMC_BACKUP_KEY"] = settings.backup_key or ""
    try:
        assert main(["--config", str(cfg), "backup", "--type", "full", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out) >= {
            "backup_id",
            "path",
            "timestamp",
            "type",
            "size_bytes",
            "collections",
            "filesystem",
        }
        assert out["collections"]["conversations"]["documents"] == 40
        assert (
            main(
                [
                    "--config",
                    str(cfg),
                    "backup",
                    "--type",
                    "incremental",
                    "--collection",
                    "quotes",
                    "--json",
                ]
            )
            == 0
        )
        inc = json.loads(capsys.readouterr().out)
        assert (
            list(inc["collections"]) == ["quotes"]
            and inc["collections"]["quotes"]["documents"] == 0
        )
        assert main(["--config", str(cfg), "list", "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
        assert [b["backup_id"] for b in listing["backups"]] == [inc["backup_id"], out["backup_id"]]
        assert main(["--config", str(cfg), "list", "--type", "full", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["count"] == 1
    finally:
        del os.environ["BMC_BACKUP_KEY"]


def test_importing_the_definitions_module_builds_nothing_and_reads_no_configuration(
    tmp_path: Path,
) -> None:
    """A broken configuration file does not break the import: only loading the location reads it."""
    import subprocess
    import sys

    bad = tmp_path / "broken.json"
    bad.write_text("{ not json")
    code = (
        "import dagster as dg, bmc_pipeline.definitions as d\n"
        "assert not isinstance(d.defs, dg.Definitions)\n"
        "print('imported')"
    )
    env = {**os.environ, "BMC_CONFIG": str(bad)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr


@pytest.mark.parametrize("strategy", ["merge", "timestamp_based"])
def test_the_launchpad_default_strategy_follows_the_configuration(
    mock_settings: Settings, strategy: str
) -> None:
    restore = mock_settings.restore.model_copy(update={"default_strategy": strategy})
    s = mock_settings.model_copy(update={"restore": restore})
    job = build_definitions(s).resolve_job_def("restore_job")
    assert job.run_config is not None
    default = job.run_config["ops"]["restore_op"]["config"]
    assert default["strategy"] == strategy and default["dry_run"] is True


def test_the_database_password_is_never_in_the_configuration_the_ui_shows(
    mock_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bmc_pipeline.engine.mongo import masked_uri, split_password
    from bmc_pipeline.resources import PASSWORD_ENV

    monkeypatch.setenv(PASSWORD_ENV, "")  # restored (unset) after the test: the code sets it
    monkeypatch.delenv(PASSWORD_ENV)
    uri = "mongodb://bmc:s3cr%40t-pw@db1.internal:27017,db2.internal:27017/?authSource=admin"
    mongo = mock_settings.mongodb.model_copy(update={"uri": uri})
    defs = build_definitions(mock_settings.model_copy(update={"mongodb": mongo}))
    resource = defs.get_repository_def().get_top_level_resources()["mongo"]
    shown = resource.config_schema.default_value_as_json_str  # what the UI and GraphQL serve
    assert "s3cr" not in shown and PASSWORD_ENV in shown
    assert "mongodb://bmc@db1.internal:27017,db2.internal:27017/?authSource=admin" in shown
    assert os.environ[PASSWORD_ENV] == "s3cr@t-pw"  # decoded, where the run's EnvVar finds it
    assert split_password("mongodb://127.0.0.1:27217/") == ("mongodb://127.0.0.1:27217/", None)
    assert masked_uri(uri).startswith("mongodb://bmc:****@db1.internal")
