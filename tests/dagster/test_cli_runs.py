"""One run history: what the command line and the Python API do is a Dagster run of its job,
with the code location's origin, so the UI lists it under the job and the failure sensor (which
watches its own code location's runs) alerts on it, as the daemon evaluates it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from bmc_pipeline import restore_from_backup
from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.jobs.history import dagster_home
from bmc_pipeline.run_origin import (
    CODE_LOCATION,
    DEFINITIONS_ATTRIBUTE,
    DEFINITIONS_MODULE,
    REPOSITORY_LABEL,
    REPOSITORY_LABEL_TAG,
    REPOSITORY_NAME,
    remote_origin,
)
from tests.support import ROOT, write_config


@pytest.fixture
def cli(
    mock_settings: Settings, seeded: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    cfg = write_config(mock_settings, tmp_path / "cfg.json")
    monkeypatch.setenv("BMC_CONFIG", str(cfg))  # where the Python API reads its settings
    # the instance the command line uses (an earlier test may have left another one in the env)
    monkeypatch.setenv("DAGSTER_HOME", str(mock_settings.path(mock_settings.dagster_home)))
    return ["--config", str(cfg)]


def _runs(settings: Settings, job: str) -> list[dg.DagsterRun]:
    dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs(dg.RunsFilter(job_name=job)))


def _alerts(settings: Settings) -> list[dict[str, Any]]:
    log = settings.path(settings.alerts.log_file)
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_the_origin_names_the_workspace_code_location() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]
    assert (entry["module_name"], entry["attribute"], entry["location_name"]) == (
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, CODE_LOCATION,
    )  # fmt: skip


def test_command_line_work_is_a_run_of_its_job_in_the_code_location(
    cli: list[str], mock_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cli, "backup", "--no-files", "--json"]) == 0
    backup_id = json.loads(capsys.readouterr().out)["backup_id"]
    assert main([*cli, "restore", backup_id, "--collection", "quotes",
                 "--target-collection", "quotes_copy", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["restored"] > 0
    assert main([*cli, "rollback", report["rollback_id"]]) == 0
    assert "rolled back quotes" in capsys.readouterr().out
    assert main([*cli, "scan", "--source", "filesystem", "--output-dir", str(tmp_path / "r")]) == 0
    assert "reports:" in capsys.readouterr().out
    restore_from_backup(backup_id, "quotes_python", dry_run=True, filters={"collection": "quotes"})
    assert main([*cli, "rotate", "--dry-run"]) == 0
    assert "would be deleted" in capsys.readouterr().out
    assert main([*cli, "drill", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    for job, count in (("full_backup_job", 1), ("restore_job", 2), ("rollback_job", 1),
                       ("scan_job", 1), ("storage_job", 1), ("drill_job", 1)):  # fmt: skip
        runs = _runs(mock_settings, job)
        assert len(runs) == count, job
        for run in runs:
            origin = run.remote_job_origin
            assert origin is not None and origin.job_name == job
            assert origin.repository_origin.repository_name == REPOSITORY_NAME
            assert origin.repository_origin.code_location_origin.location_name == CODE_LOCATION
            assert run.job_code_origin is not None and run.job_code_origin.job_name == job
            assert run.tags[REPOSITORY_LABEL_TAG] == REPOSITORY_LABEL
            assert run.tags["dagster/code_location"] == CODE_LOCATION
    launched = sorted(
        r.tags["bmc/launched_by"].split(":")[0] for r in _runs(mock_settings, "restore_job")
    )
    assert launched == ["cli", "python"]


def _sensor_tick(
    settings: Settings, instance: dg.DagsterInstance, cursor: str | None
) -> str | None:
    """One evaluation of run_failure_alerts as the daemon makes it: inside the code location
    (whose runs it watches), from the cursor the previous tick left."""
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("run_failure_alerts")
    context = dg.SensorEvaluationContext(
        instance_ref=None, last_tick_completion_time=None, last_run_key=None, cursor=cursor,
        log_key=None, repository_name=REPOSITORY_NAME, instance=instance,
        repository_def=defs.get_repository_def(),
        code_location_origin=remote_origin("restore_job").repository_origin.code_location_origin,
    )  # fmt: skip
    result = sensor.evaluate_tick(context)
    return result.cursor


def test_a_failed_command_line_restore_alerts(
    cli: list[str], mock_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    dagster_home(mock_settings)
    with dg.DagsterInstance.get() as instance:
        cursor = _sensor_tick(mock_settings, instance, None)  # the sensor starts watching
        assert (
            main([*cli, "restore", "20990101T000000Z-full-000000", "--collection", "quotes"]) == 4
        )
        assert "not found" in capsys.readouterr().err.lower()
        (failed,) = _runs(mock_settings, "restore_job")
        assert failed.status == dg.DagsterRunStatus.FAILURE
        _sensor_tick(mock_settings, instance, cursor)
    (alert,) = _alerts(mock_settings)
    assert alert["title"] == "recovery operation failure: restore_job"
    assert alert["run_url"].endswith(failed.run_id)


def test_push_pull_and_delete_are_runs_of_the_storage_job(
    mock_settings: Settings,
    seeded: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = mock_settings.storage.model_copy(update={"remote_url": f"file://{tmp_path}/remote"})
    s = mock_settings.model_copy(update={"storage": storage})
    cli = ["--config", str(write_config(s, tmp_path / "cfg.json"))]
    monkeypatch.setenv("DAGSTER_HOME", str(s.path(s.dagster_home)))
    assert main([*cli, "backup", "--no-files", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["backup_id"]
    assert main([*cli, "backup", "--no-files", "--type", "incremental", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["backup_id"]
    assert main([*cli, "push", "--all"]) == 0  # the backup run pushed them already
    assert "nothing to copy" in capsys.readouterr().out
    assert main([*cli, "delete", second, "--confirm", second]) == 0
    assert f"deleted backup {second} (and its remote copy)" in capsys.readouterr().out
    assert main([*cli, "push", first, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pushed"][0]["backup_id"] == first
    assert main([*cli, "delete", first, "--confirm", first]) == 9  # the newest full: guarded
    assert "newest full backup of quotes" in capsys.readouterr().err
    assert main([*cli, "pull", "--all"]) == 0
    assert "nothing to fetch" in capsys.readouterr().out  # the delete took the remote copy too
    actions = [
        (r.run_config["ops"]["storage_op"]["config"]["action"], r.status.value)
        for r in reversed(_runs(s, "storage_job"))
    ]
    assert actions == [("push", "SUCCESS"), ("delete", "SUCCESS"), ("push", "SUCCESS"),
                       ("delete", "FAILURE"), ("pull", "SUCCESS")]  # fmt: skip
