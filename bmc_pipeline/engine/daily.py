"""The daily report: what the backups did in the last day, sent through every alert channel.

The original request asks to be told of successes as well as failures. A report every morning
means silence is never taken for health: a day without it is itself a sign (the daemon is down).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bmc_pipeline.engine.alerts import Alert


def daily_report(health: dict[str, Any], found: list[str], now: datetime) -> Alert:
    """The report as an ``info`` alert: backups, sizes, drills, RPO per collection, open risks."""
    since = now - timedelta(days=1)
    lines = [
        f"Backups in the last 7 days: {health['backup_runs_7d']} run(s), success rate "
        + (
            f"{100 * health['backup_success_rate_7d']:.0f} %"
            if health["backup_success_rate_7d"] is not None
            else "no runs"
        )
        + f"; {health['backups']} backup(s) stored, {health['storage_bytes'] / 1e6:.1f} MB used, "
        f"{health['stored_last_7d_bytes'] / 1e6:.1f} MB written this week.",
    ]
    for row in health["collections"]:
        age = "never backed up" if row["age_s"] is None else f"{row['age_s'] / 3600:.1f} h"
        lines.append(
            f"{row['collection']}: newest point {age} old ({row['documents'] or 0} documents), "
            f"last full {row['last_full'] or 'never'}"
        )
    drill = health.get("last_drill")
    if drill is None:
        lines.append("Restore drill: none has run yet.")
    else:
        state = "passed" if drill["ok"] else "FAILED"
        lines.append(
            f"Restore drill {drill['at']}: {state}, {drill['documents']} documents restored in "
            f"{drill['rto_s']} s."
        )
    restores = [r for r in health["restores"] if datetime.fromisoformat(r["at"]) >= since]
    if restores:
        lines.append(f"Restores in the last day: {len(restores)}.")
    lines += [f"Risk: {p}" for p in found] or ["No open risks."]
    return Alert(
        key="daily-report",
        severity="info",
        title=(
            f"daily backup report: {len(found)} risk(s) open"
            if found
            else "daily backup report: all is well"
        ),
        text="\n".join(lines),
        at=now.isoformat(),
    )
