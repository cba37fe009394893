"""The local Dagster instance, and what its run history says about backups.

The command line and the API run jobs against the instance at ``DAGSTER_HOME`` (by default
``.bmc/dagster`` next to ``backup_config.json``); the health report reads the backup runs back.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.health import RunRecord, health_report
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES

INSTANCE_CONFIG = """\
# Dagster instance for runs launched by bmc-backup and `make ui` (local storage in this directory).
telemetry:
  enabled: false
"""


def ensure_instance_config(home: Path) -> None:
    """Write the instance's dagster.yaml once: default local storage, no usage telemetry."""
    cfg = home / "dagster.yaml"
    if not cfg.exists() or not cfg.read_text().strip():
        cfg.write_text(INSTANCE_CONFIG)


def dagster_home(settings: Settings) -> Path:
    """Make sure Dagster has an instance directory, and return it."""
    home = settings.path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    ensure_instance_config(home)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def backup_run_history(instance: dg.DagsterInstance, since: datetime) -> list[RunRecord]:
    """Finished runs of the backup jobs since ``since``, from the Dagster instance."""
    out = []
    for job in BACKUP_JOB_NAMES.values():
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job,
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
                created_after=since,
            )
        )
        for r in records:
            success = r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            out.append(RunRecord(job, success, r.create_timestamp.astimezone(timezone.utc)))
    return out


def health_now(settings: Settings) -> dict[str, Any]:
    """The health report at this moment, with the last 30 days of backup runs from Dagster."""
    dagster_home(settings)
    now = datetime.now(timezone.utc)
    with dg.DagsterInstance.get() as instance:
        runs = backup_run_history(instance, now - timedelta(days=30))
    d = Deployment(settings)
    return health_report(settings, d.store(), d.keyring(), runs, now)
