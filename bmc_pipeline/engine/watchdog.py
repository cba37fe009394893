"""The watchdog's view: per collection, how recoverable it is now; and what is wrong, if anything.

It is meant to run outside the Dagster daemon (``bmc-backup status --check`` from cron or a systemd
timer, or a monitoring system reading ``--format prometheus``): when the daemon stops, backups,
their alerts and the drill stop with it, and only something outside it can say so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.capture.status import capture_problems, recoverable_until
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.store import BackupStore

INCREMENTAL_EVERY_H = 6  # the incremental schedule's period (schedules.py)


def collection_table(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    now: datetime,
    drills: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per configured collection: last full and incremental, age, documents at the newest
    point, the newest time a restore can reach, and the last drill of it."""
    newest: dict[str, dict[str, Any]] = {}
    for ref in store.refs():
        if ref.backup_type == "rollback":
            continue
        try:
            m = store.load_manifest(ref, keyring)
        except BmcError:
            continue  # an unreadable backup is no backup
        for name, entry in m.collections.items():
            row = newest.setdefault(name, {})
            row[ref.backup_type] = (m.taken, ref.backup_id)
            row["point"] = (m.taken, entry.state.documents)
    last_drill = drills[-1] if drills else None
    try:
        position = CaptureStore(store, keyring).position()
    except BmcError:
        position = None  # status reports the unreadable position on its own
    rows = []
    for name in settings.collections:
        r = newest.get(name, {})
        full, inc, point = r.get("full"), r.get("incremental"), r.get("point")
        drilled = (last_drill or {}).get("collections", {}).get(name)
        rows.append(
            {
                "collection": name,
                "last_full": full[0].isoformat() if full else None,
                "last_full_id": full[1] if full else None,
                "last_incremental": inc[0].isoformat() if inc else None,
                "age_s": round((now - point[0]).total_seconds()) if point else None,
                "documents": point[1] if point else None,
                "recoverable_until": _iso(recoverable_until(position, point[0] if point else None)),
                "last_drill": last_drill["at"] if last_drill else None,
                "last_drill_ok": (
                    None if not last_drill else bool(drilled and drilled["verified"])
                ),
            }
        )
    return rows


def _num(value: float | None) -> str:
    return "NaN" if value is None else str(value)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def problems(health: dict[str, Any], settings: Settings, now: datetime) -> list[str]:
    """Why the backups cannot be trusted right now; empty when all is well."""
    out = backup_problems(health["collections"], settings, now)
    out += capture_problems(health.get("capture"), settings)
    out += drill_problems(health.get("last_drill"), settings, now)
    daemon = health.get("daemon") or {}
    if not daemon.get("running"):
        out.append(f"the Dagster daemon is not running: {daemon.get('why', 'no heartbeat')}")
    for alert in health.get("open_alerts", []):
        out.append(f"open alert ({alert['severity']}): {alert['title']}")
    return out


def backup_problems(rows: list[dict[str, Any]], settings: Settings, now: datetime) -> list[str]:
    """Collections whose newest full backup, or newest backup point, is too old."""
    a = settings.alerts
    out = []
    for row in rows:
        name = row["collection"]
        if row["last_full"] is None:
            out.append(f"{name}: no full backup yet")
        else:
            full_age_h = (now - datetime.fromisoformat(row["last_full"])).total_seconds() / 3600
            if full_age_h > a.stale_full_hours:
                out.append(
                    f"{name}: newest full backup is {full_age_h:.1f} h old "
                    f"(threshold alerts.stale_full_hours {a.stale_full_hours:g} h)"
                )
        limit_h = INCREMENTAL_EVERY_H + a.late_hours
        if row["age_s"] is not None and row["age_s"] / 3600 > limit_h:
            out.append(
                f"{name}: newest backup point is {row['age_s'] / 3600:.1f} h old (more than "
                f"{INCREMENTAL_EVERY_H} h between incrementals + alerts.late_hours {a.late_hours:g})"
            )
    return out


def drill_problems(drill: dict[str, Any] | None, settings: Settings, now: datetime) -> list[str]:
    """No drill yet, the last one failed, or it is too old."""
    if drill is None:
        return ["no restore drill has run yet: run 'bmc-backup drill'"]
    out = []
    if not drill["ok"]:
        why = drill.get("error") or "not verified"
        out.append(f"the last restore drill ({drill['at']}) failed: {why}")
    age_h = (now - datetime.fromisoformat(drill["at"])).total_seconds() / 3600
    if age_h > settings.drill.max_age_hours:
        out.append(
            f"the last restore drill is {age_h:.1f} h old "
            f"(threshold drill.max_age_hours {settings.drill.max_age_hours:g} h)"
        )
    return out


def prometheus(health: dict[str, Any], found: list[str]) -> str:
    """The health as Prometheus text exposition (for node_exporter's textfile collector)."""

    def ts(iso: str | None) -> str:
        return str(datetime.fromisoformat(iso).timestamp()) if iso else "NaN"

    lines = [
        "# HELP bmc_backup_ok 1 when status --check finds nothing wrong",
        "# TYPE bmc_backup_ok gauge",
        f"bmc_backup_ok {0 if found else 1}",
        "# HELP bmc_backup_problems problems status --check reports",
        "# TYPE bmc_backup_problems gauge",
        f"bmc_backup_problems {len(found)}",
        "# HELP bmc_backup_last_full_timestamp_seconds newest full backup of a collection",
        "# TYPE bmc_backup_last_full_timestamp_seconds gauge",
    ]
    rows = health["collections"]
    lines += [
        f'bmc_backup_last_full_timestamp_seconds{{collection="{r["collection"]}"}} {ts(r["last_full"])}'
        for r in rows
    ]
    lines += [
        "# HELP bmc_backup_recoverable_until_timestamp_seconds newest time a restore can reach",
        "# TYPE bmc_backup_recoverable_until_timestamp_seconds gauge",
    ]
    lines += [
        f'bmc_backup_recoverable_until_timestamp_seconds{{collection="{r["collection"]}"}} {ts(r["recoverable_until"])}'
        for r in rows
    ]
    lines += [
        "# HELP bmc_backup_documents documents at the newest backup point",
        "# TYPE bmc_backup_documents gauge",
    ]
    lines += [
        f'bmc_backup_documents{{collection="{r["collection"]}"}} {r["documents"] if r["documents"] is not None else "NaN"}'
        for r in rows
    ]
    drill = health.get("last_drill")
    daemon = health.get("daemon") or {}
    lines += [
        "# HELP bmc_drill_last_timestamp_seconds when the last restore drill ran",
        "# TYPE bmc_drill_last_timestamp_seconds gauge",
        f"bmc_drill_last_timestamp_seconds {ts(drill['at']) if drill else 'NaN'}",
        "# HELP bmc_drill_last_ok 1 when the last restore drill verified",
        "# TYPE bmc_drill_last_ok gauge",
        f"bmc_drill_last_ok {1 if drill and drill['ok'] else 0}",
        "# HELP bmc_drill_rto_seconds how long the last drill's restore took",
        "# TYPE bmc_drill_rto_seconds gauge",
        f"bmc_drill_rto_seconds {drill['rto_s'] if drill else 'NaN'}",
        "# HELP bmc_daemon_heartbeat_age_seconds age of the Dagster daemon's newest heartbeat",
        "# TYPE bmc_daemon_heartbeat_age_seconds gauge",
        f"bmc_daemon_heartbeat_age_seconds {daemon.get('heartbeat_age_s') if daemon.get('heartbeat_age_s') is not None else 'NaN'}",
        "# HELP bmc_capture_lag_seconds how far continuous capture's newest sealed time is behind",
        "# TYPE bmc_capture_lag_seconds gauge",
        f"bmc_capture_lag_seconds {_num((health.get('capture') or {}).get('lag_s'))}",
        "# HELP bmc_capture_open_gaps gaps in capture that no full backup has closed yet",
        "# TYPE bmc_capture_open_gaps gauge",
        f"bmc_capture_open_gaps {len((health.get('capture') or {}).get('open_gaps', []))}",
        "# HELP bmc_open_alerts open alerts",
        "# TYPE bmc_open_alerts gauge",
        f"bmc_open_alerts {len(health.get('open_alerts', []))}",
    ]
    return "\n".join(lines) + "\n"
