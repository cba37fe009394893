"""The Dagster side of continuous capture, which runs as its own process (`bmc-backup capture`).

* One asset per collection, ``capture/<collection>``: materialized by ``capture_sensor`` for
  every segment sealed since its last look, with the changes, bytes and lag as metadata, so the
  UI shows capture's history next to the backups'.
* ``capture_sensor`` (every 30 seconds) alerts once when the newest sealed time is older than
  ``capture.max_lag_seconds`` (and says when it recovers), alerts a gap capture did not alert
  itself, and requests a full backup run for a gap that no full backup has closed yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert
from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.capture.status import capture_status
from bmc_pipeline.engine.deployment import Deployment

Clock = Callable[[], datetime]
CAPTURE_PREFIX = "capture"


def capture_asset_specs(settings: Settings) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=[CAPTURE_PREFIX, name],
            group_name="capture",
            description=f"changes to {name} sealed by continuous capture (bmc-backup capture); "
            "materialized by capture_sensor, one materialization per segment",
            kinds={"mongodb"},
        )
        for name in settings.collections
    ]


def _materializations(
    capture: CaptureStore, after: str
) -> tuple[list[dg.AssetMaterialization], str]:
    events = []
    newest = after
    for seg in capture.segments():
        if seg.name <= after:
            continue
        manifest = capture.manifest(seg)
        sealed = datetime.fromisoformat(manifest["segment"]["sealed"])
        for coll, entry in manifest["collections"].items():
            last = datetime.fromisoformat(entry["last"])
            events.append(
                dg.AssetMaterialization(
                    asset_key=[CAPTURE_PREFIX, coll],
                    description=f"segment {seg.name}",
                    metadata={
                        "segment": seg.name,
                        "changes": entry["changes"],
                        "bytes": entry["archive"]["stored_bytes"],
                        "first_change": entry["first"],
                        "last_change": entry["last"],
                        "lag_s": round((sealed - last).total_seconds(), 3),
                    },
                )
            )
        newest = max(newest, seg.name)
    return events, newest


def build_capture_sensor(
    settings: Settings, full_job: str, clock: Clock = lambda: datetime.now(timezone.utc)
) -> dg.SensorDefinition:
    deployment = Deployment(settings)

    @dg.sensor(
        name="capture_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="continuous capture: segments as asset materializations; alerts when capture "
        "lags or lost history; a full backup when a gap needs one",
    )
    def capture_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        now = clock()
        store, keyring = deployment.store(), deployment.keyring()
        status = capture_status(store, keyring, now)
        if status is None or "error" in status:
            why = status["error"] if status else "capture has not run here"
            return dg.SkipReason(why)
        cursor: dict[str, Any] = json.loads(context.cursor or "{}")
        events, cursor["segment"] = _materializations(
            CaptureStore(store, keyring), cursor.get("segment", "")
        )
        notifier = deployment.notifier()
        limit = settings.capture.max_lag_seconds
        lagging = status["lag_s"] is not None and status["lag_s"] > limit
        if lagging and not cursor.get("lagging"):
            notifier.send(Alert(
                key="capture-lag", severity="critical", title="Continuous capture is behind",
                text=f"the newest sealed change time is {status['recoverable_until']}, "
                     f"{status['lag_s']:.0f} s ago (capture.max_lag_seconds {limit:g}); is "
                     "'bmc-backup capture' running?", at=now.isoformat(),
            ))  # fmt: skip
        elif cursor.get("lagging") and not lagging:
            notifier.send(Alert(
                key="capture-lag", severity="resolved", title="Continuous capture caught up",
                text=f"recoverable until {status['recoverable_until']}", at=now.isoformat(),
            ))  # fmt: skip
        cursor["lagging"] = lagging
        alerted = set(cursor.get("gaps", []))
        runs = []
        for gap in status["gaps"]:
            if not gap["alerted"] and gap["after"] not in alerted:
                notifier.send(Alert(
                    key="capture-gap", severity="critical", title="Capture lost history",
                    text=f"changes between {gap['after']} and {gap['before']} may be missing: "
                         f"{gap['reason']}", at=now.isoformat(),
                ))  # fmt: skip
            alerted.add(gap["after"])
        for gap in status["open_gaps"]:
            runs.append(dg.RunRequest(
                run_key=f"capture-gap-{gap['after']}", job_name=full_job,
                partition_key=now.date().isoformat(),
                tags={"bmc/reason": f"capture lost history after {gap['after']}"},
            ))  # fmt: skip
        cursor["gaps"] = sorted(alerted)
        return dg.SensorResult(
            run_requests=runs, asset_events=list(events), cursor=json.dumps(cursor, sort_keys=True)
        )

    return capture_sensor
