"""Schedules, at the times ``backup_config.json`` gives (``schedules``; by default full backups
daily at 02:00 UTC, incrementals every 6 hours from 00:00 UTC, retention daily at 03:00 UTC, the
health report hourly), the restore drill at ``drill.schedule`` (04:00 UTC) and the daily report
at ``alerts.daily_report`` (07:00 UTC).

They run as soon as the Dagster daemon runs (``DefaultScheduleStatus.RUNNING``): backups that wait
for someone to switch them on are backups that do not happen. The jobs are in ``jobs/``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES
from bmc_pipeline.jobs.maintenance import DRILL_JOB, HEALTH_JOB, RETENTION_JOB
from bmc_pipeline.jobs.report import DAILY_REPORT_JOB


def _cron(name: str, job_name: str, cron: str, what: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{what}: '{cron}' UTC",
    )


def build_schedules(settings: Settings, jobs: dict[str, Any]) -> list[Any]:
    """The schedules, given the backup jobs by name (partitioned schedules need the job itself).

    ``Any``: Dagster's types for asset jobs and their schedules are not all public at run time.
    """
    s = settings.schedules
    hour, minute = s.full_hour_minute
    return [
        dg.build_schedule_from_partitioned_job(
            jobs[BACKUP_JOB_NAMES["full"]],
            name="full_backup_daily",
            hour_of_day=hour,
            minute_of_hour=minute,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"the full backup, daily at {s.full_backup_at} UTC "
            "(schedules.full_backup_at)",
        ),
        dg.build_schedule_from_partitioned_job(
            jobs[BACKUP_JOB_NAMES["incremental"]],
            name="incremental_backup_6h",  # the name stays: its tick history is keyed by it
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"the incremental backup, every {s.incremental_every_hours} h from "
            "00:00 UTC (schedules.incremental_every_hours)",
        ),
        _cron("retention_daily", RETENTION_JOB, s.retention, "retention (schedules.retention)"),
        _cron("health_hourly", HEALTH_JOB, s.health, "the health report (schedules.health)"),
        _cron(
            "drill_daily", DRILL_JOB, settings.drill.schedule, "the restore drill (drill.schedule)"
        ),
        *(
            [
                _cron(
                    "daily_report",
                    DAILY_REPORT_JOB,
                    settings.alerts.daily_report,
                    "the daily report (alerts.daily_report)",
                )
            ]
            if settings.alerts.daily_report
            else []
        ),
    ]
