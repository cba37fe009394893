"""What the Dagster UI launches works and counts: a check executed on its own re-validates the
stored backup (it never makes one), and runs launched from assets or checks are classified like
the jobs' runs, for the failure alert and the health report."""

from __future__ import annotations

import dagster as dg
import pytest

from bmc_pipeline.assets.backups import INTEGRITY_CHECK, backup_set_key, collection_key
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.jobs.history import backup_run_history, dagster_home
from bmc_pipeline.launch import run_backup
from bmc_pipeline.resources import resources_from_settings
from bmc_pipeline.run_kinds import backup_type_of, operation_of


def _execute_checks(settings: Settings, *keys: dg.AssetKey) -> dg.ExecuteInProcessResult:
    """What the UI's "Execute" on a check does: a run of the checks alone, with no partition."""
    defs = build_definitions(settings)
    full = next(
        a
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.node_def.name == "full_backup"
    )
    checks = [dg.AssetCheckKey(k, INTEGRITY_CHECK) for k in keys]
    with dg.DagsterInstance.get() as instance:
        return dg.materialize(
            [full],
            selection=dg.AssetSelection.checks(*checks),
            resources=resources_from_settings(settings),
            instance=instance,
            raise_on_error=False,
        )


def test_a_check_executed_alone_revalidates_the_stored_backup_and_makes_none(
    mock_settings: Settings, seeded: dict[str, int]
) -> None:
    dagster_home(mock_settings)
    summary = run_backup(mock_settings, "full", include_files=False)
    store = BackupStore(mock_settings.backup_dir)
    before = [r.backup_id for r in store.refs()]
    keys = (collection_key("full", "quotes"), backup_set_key("full"))
    result = _execute_checks(mock_settings, *keys)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_key for e in evaluations} == set(keys) and all(e.passed for e in evaluations)
    assert {e.metadata["backup_id"].value for e in evaluations} == {summary["backup_id"]}
    assert [r.backup_id for r in store.refs()] == before  # nothing was backed up
    run = result.dagster_run
    assert operation_of(run) == "backup" and backup_type_of(run) == "full"

    # a damaged archive: the check fails, the run fails, and it reads as a backup run (alerted)
    archive = next(
        p
        for p in store.ref(summary["backup_id"]).payload_dir.iterdir()
        if p.name.startswith("quotes.bson")
    )
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    archive.write_bytes(bytes(data))
    failed = _execute_checks(mock_settings, collection_key("full", "quotes"))
    (evaluation,) = failed.get_asset_check_evaluations()
    assert not evaluation.passed and "does not authenticate" in evaluation.metadata["errors"].value
    assert operation_of(failed.dagster_run) == "backup"

    # the health report counts the real backup run only, not the re-validations
    with dg.DagsterInstance.get() as instance:
        from datetime import datetime, timedelta, timezone

        runs = backup_run_history(instance, datetime.now(timezone.utc) - timedelta(hours=1))
    assert [(r.job, r.success) for r in runs] == [("full_backup_job", True)]


def test_a_check_with_no_backup_yet_fails_and_says_so(mock_settings: Settings) -> None:
    dagster_home(mock_settings)
    result = _execute_checks(mock_settings, collection_key("full", "quotes"))
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and "no full backup yet" in evaluation.metadata["errors"].value


def test_a_backfill_of_past_partitions_backs_nothing_up(
    mock_settings: Settings, seeded: dict[str, int]
) -> None:
    """The UI's "Materialize all" on a partitioned group offers every partition: a past one
    succeeds without writing a backup labelled with a day it cannot describe."""
    from datetime import date

    dagster_home(mock_settings)
    schedules = mock_settings.schedules.model_copy(update={"start_date": date(2026, 1, 1)})
    settings = mock_settings.model_copy(update={"schedules": schedules})
    job = build_definitions(settings).resolve_job_def("full_backup_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key="2026-01-05", tags={"dagster/backfill": "bf1"}
        )
    assert result.success
    assert BackupStore(settings.backup_dir).refs() == []
    assert not result.get_asset_materialization_events()


def test_partitions_start_on_the_configured_day_or_the_oldest_backup(
    mock_settings: Settings, seeded: dict[str, int]
) -> None:
    from datetime import date, datetime, timezone

    from bmc_pipeline.assets.backups import partitions, partitions_start

    today = datetime.now(timezone.utc).date()
    assert partitions_start(mock_settings) == today  # nothing backed up yet
    (mock_settings.backup_dir / "2026-11-20").mkdir(parents=True)
    (mock_settings.backup_dir / "blobs").mkdir()
    assert partitions_start(mock_settings) == date(2026, 11, 20)
    keys = partitions(mock_settings, "full").get_partition_keys()
    assert keys[0] == "2026-11-20" and keys[-1] == today.isoformat()
    every = mock_settings.schedules.model_copy(update={"incremental_every_hours": 12})
    inc = partitions(mock_settings.model_copy(update={"schedules": every}), "incremental")
    assert inc.get_partition_keys()[:2] == ["2026-11-20-00:00", "2026-11-20-12:00"]


def test_the_health_asset_counts_every_backup_run_and_has_a_row_per_collection(
    mock_settings: Settings, seeded: dict[str, int]
) -> None:
    from bmc_pipeline.launch import run_health

    dagster_home(mock_settings)
    run_backup(mock_settings, "full", include_files=False)
    run_backup(mock_settings, "incremental", include_files=False)
    health = run_health(mock_settings)
    assert health["backup_runs_counted"] == 2
    table = health["collections"]
    assert [r["collection"] for r in table] == list(mock_settings.collections)
    assert all(int(r["documents"]) >= 0 and r["last_full"] for r in table)
    defs = build_definitions(mock_settings)
    spec = next(
        s for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)
        for s in a.specs if s.key == dg.AssetKey(["backups", "health"])
    )  # fmt: skip
    assert {d.asset_key for d in spec.deps} >= {
        backup_set_key("full"),
        backup_set_key("incremental"),
    }
    assert spec.owners == ["team:chatbot-ops"]


def test_the_launchpad_opens_without_errors_and_explains_every_field(
    mock_settings: Settings,
) -> None:
    from bmc_pipeline.jobs.restore import RestoreConfig

    defs = build_definitions(mock_settings)
    for name in ("restore_job", "rollback_job"):
        job = defs.resolve_job_def(name)
        assert job.run_config_schema.config_type.fields  # a default config the UI opens with
        default = job.run_config_schema.config_type.fields["ops"].default_value
        assert default, f"{name} opens with its fields filled in"
    missing = [n for n, f in RestoreConfig.model_fields.items() if not f.description]
    assert missing == ["target_collection"] or not missing, missing
    with pytest.raises(ValueError, match="not an ISO date"):
        RestoreConfig(date_from="yesterday")
    storage = defs.get_repository_def().get_top_level_resources()["storage"]
    shown = storage.config_schema.default_value_as_json_str
    assert '"dir_mode": "755"' in shown and '"file_mode": "600"' in shown  # not 493 / 384
