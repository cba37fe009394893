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
from bmc_pipeline.engine.capture.status import capture_status
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.drill import drill_history
from bmc_pipeline.engine.health import RunRecord, health_report
from bmc_pipeline.engine.watchdog import collection_table
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES
from bmc_pipeline.run_kinds import backup_type_of, is_checks_only, operation_of

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
    # run logs and step outputs (restore reports, ids) live here: its owner only
    home.chmod(0o700)
    ensure_instance_config(home)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def backup_run_history(instance: dg.DagsterInstance, since: datetime) -> list[RunRecord]:
    """Finished backup runs since ``since``, however launched: the backup jobs (schedules, the
    command line, the API) and the UI's own asset runs, each counted under its backup job.

    A run that only executed checks (a re-validation) backs nothing up and is not counted.
    """
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            created_after=since,
        )
    )
    out = []
    for r in records:
        run = r.dagster_run
        btype = backup_type_of(run)
        if operation_of(run) != "backup" or btype not in BACKUP_JOB_NAMES:
            continue
        if is_checks_only(run):
            continue
        success = run.status == dg.DagsterRunStatus.SUCCESS
        at = r.create_timestamp.astimezone(timezone.utc)
        out.append(RunRecord(BACKUP_JOB_NAMES[btype], success, at))
    return sorted(out, key=lambda rec: rec.at)


# The daemons whose silence stops backups (schedules) and alerts (sensors).
WATCHED_DAEMONS = ("SCHEDULER", "SENSOR")


def daemon_health(instance: dg.DagsterInstance, now: datetime, max_age_s: float) -> dict[str, Any]:
    """Whether the Dagster daemon is alive, from the heartbeats it writes into the instance."""
    beats = instance.get_daemon_heartbeats()
    ages = {
        t: round(now.timestamp() - beats[t].timestamp, 1) for t in WATCHED_DAEMONS if t in beats
    }
    missing = [t for t in WATCHED_DAEMONS if t not in ages]
    stale = {t: a for t, a in ages.items() if a > max_age_s}
    why = None
    if missing and not ages:
        why = "it has never run against this instance (start 'dagster-daemon run')"
    elif missing:
        why = f"no heartbeat from {', '.join(missing)}"
    elif stale:
        why = ", ".join(f"{t} last seen {a:.0f} s ago" for t, a in stale.items())
    return {
        "running": why is None,
        "heartbeat_age_s": max(ages.values()) if ages else None,
        "heartbeats": ages,
        **({"why": f"{why} (alerts.daemon_heartbeat_max_age_s {max_age_s:g} s)"} if why else {}),
    }


def health_now(settings: Settings) -> dict[str, Any]:
    """The health report at this moment, from the local instance (the command line, the API)."""
    dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        return health_at(settings, instance, datetime.now(timezone.utc))


def health_at(settings: Settings, instance: dg.DagsterInstance, now: datetime) -> dict[str, Any]:
    """The health report: backup runs of the last 30 days and the daemon from Dagster, a row per
    collection, the last restore drill."""
    runs = backup_run_history(instance, now - timedelta(days=30))
    daemon = daemon_health(instance, now, settings.alerts.daemon_heartbeat_max_age_s)
    d = Deployment(settings)
    store, keyring = d.store(), d.keyring()
    report = health_report(settings, store, keyring, runs, now)
    drills = drill_history(settings)
    report["collections"] = collection_table(settings, store, keyring, now, drills)
    report["last_drill"] = drills[-1] if drills else None
    report["daemon"] = daemon
    report["capture"] = capture_status(store, keyring, now)
    return report
