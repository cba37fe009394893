"""Alerting sensors, running by default when the Dagster daemon runs.

* ``backup_risk_sensor`` (every 5 minutes): no full backup of a collection for too long, a
  scheduled backup late, little free space. Each incident alerts once; its key is remembered in
  the sensor's cursor, and a "resolved" message goes out when the condition clears.
* ``run_failure_alerts``: a failed backup run, or a failed restore, rollback or scan run
  ("recovery operation failure"), alerts at once with the error and the run's link.

The clock is a parameter of the builder, so tests evaluate the sensors at chosen times.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.health import resolved, risks
from bmc_pipeline.run_kinds import operation_of

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def step_failures(context: dg.RunFailureSensorContext) -> tuple[list[str], list[str]]:
    """(what made each step fail, the failed blocking integrity checks among them).

    The first is the innermost error's message (Dagster's own wrappers say only that the step
    failed), so the alert names the file, backup or collection involved.
    """
    causes, checks = [], []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None:
            if error.cls_name == "DagsterAssetCheckFailedError":
                checks.append(error.message.strip())
            if error.cause is None:
                causes.append(error.message.strip())
            error = error.cause
    return causes, checks


def build_sensors(settings: Settings, clock: Clock = _utcnow) -> list[dg.SensorDefinition]:
    deployment = Deployment(settings)

    @dg.sensor(
        name="backup_risk_sensor",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="alerts once per incident: stale full backups, late schedules, low disk space",
    )
    def backup_risk_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        now = clock()
        open_incidents: dict[str, dict[str, str | None]] = json.loads(context.cursor or "{}")
        current = risks(settings, deployment.store(), deployment.keyring(), now)
        notifier = deployment.notifier()
        sent = []
        for key, alert in current.items():
            if key not in open_incidents:
                notifier.send(alert)
                open_incidents[key] = {"title": alert.title, "collection": alert.collection,
                                       "backup_id": alert.backup_id}  # fmt: skip
                sent.append(key)
        for key in [k for k in open_incidents if k not in current]:
            info = open_incidents.pop(key)
            was = Alert(key=key, severity="critical", title=str(info["title"]), text="",
                        collection=info["collection"], backup_id=info["backup_id"])  # fmt: skip
            notifier.send(resolved(was, now))
            sent.append(f"resolved {key}")
        context.update_cursor(json.dumps(open_incidents, sort_keys=True))
        return dg.SkipReason(
            f"open incidents: {sorted(open_incidents) or 'none'}; sent: {sent or 'nothing'}"
        )

    @dg.run_failure_sensor(
        name="run_failure_alerts",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="alerts when a backup, restore, rollback, scan, retention or storage run fails",
    )
    def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        operation = operation_of(run)  # also for runs the UI launched from assets or checks
        causes, checks = step_failures(context)
        error = "; ".join(causes) or context.failure_event.message or "the run failed"
        if operation == "backup":
            if checks:  # written, but it does not read back: the backup cannot be trusted
                title = f"integrity check failure: {run.job_name}"
                error = "; ".join(checks)
            else:
                title = f"backup run failed: {run.job_name}"
        elif operation in ("restore", "scan", "retention"):
            title = f"recovery operation failure: {run.job_name}"
        elif operation == "storage":  # push, pull, delete
            title = f"backup storage failure: {run.job_name}"
        else:
            return  # not one of ours (the drill alerts by itself, with what failed)
        deployment.notifier().send(
            Alert(
                key=f"run:{run.run_id}",
                severity="critical",
                title=title,
                text=error,
                run_url=f"{settings.alerts.ui_url.rstrip('/')}/runs/{run.run_id}",
                at=clock().isoformat(),
            )
        )

    return [backup_risk_sensor, run_failure_alerts]
