"""What `status`, the health report and the capture sensor say about continuous capture: how far
it reaches, how far behind it is, and the gaps no restore can cross."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.capture.segments import CaptureStore, Position
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.store import BackupStore


def capture_status(store: BackupStore, keyring: KeyRing, now: datetime) -> dict[str, Any] | None:
    """The saved position as the health report shows it; None before capture first ran."""
    try:
        pos = CaptureStore(store, keyring).position()
    except BmcError as exc:
        return {"error": str(exc)}
    if pos is None:
        return None
    until = pos.recoverable_until
    newest_full = _newest_full(store)
    return {
        "source": pos.source,
        "recoverable_until": until.isoformat() if until else None,
        "lag_s": round((now - until).total_seconds(), 1) if until else None,
        "ranges": [r.model_dump(mode="json") for r in pos.ranges],
        "gaps": [g.model_dump(mode="json") for g in pos.gaps],
        # a gap is closed once a full backup was taken after it
        "open_gaps": [
            g.model_dump(mode="json")
            for g in pos.gaps
            if newest_full is None or newest_full < g.before
        ],
        "full_requested": pos.full_requested.isoformat() if pos.full_requested else None,
        "segments": pos.segments,
        "changes": pos.changes,
        "updated": pos.updated.isoformat() if pos.updated else None,
    }


def _newest_full(store: BackupStore) -> datetime | None:
    fulls = store.refs(backup_type="full")
    return fulls[-1].timestamp if fulls else None


def recoverable_until(position: Position | None, point_taken: datetime | None) -> datetime | None:
    """The newest second a restore of a collection reaches: its newest backup point, or the end
    of capture when the newest covered range began before that point (replay starts there)."""
    if point_taken is None:
        return None
    if position is None or not position.ranges:
        return point_taken
    newest = position.ranges[-1]
    if newest.start <= point_taken:
        return max(point_taken, newest.until)
    return point_taken


def capture_problems(status: dict[str, Any] | None, settings: Settings) -> list[str]:
    """Why capture cannot be trusted now (only where ``capture.enabled`` says it should run)."""
    if not settings.capture.enabled:
        return []
    if status is None:
        return ["continuous capture has not run yet: start 'bmc-backup capture' (docs/CAPTURE.md)"]
    if "error" in status:
        return [f"continuous capture: {status['error']}"]
    out = []
    limit = settings.capture.max_lag_seconds
    if status["lag_s"] is not None and status["lag_s"] > limit:
        out.append(
            f"continuous capture is {status['lag_s']:.0f} s behind (threshold "
            f"capture.max_lag_seconds {limit:g} s): is 'bmc-backup capture' running?"
        )
    for g in status["open_gaps"]:
        out.append(
            f"continuous capture lost history between {g['after']} and {g['before']}; no full "
            "backup since: take one ('bmc-backup backup --type full')"
        )
    return out
