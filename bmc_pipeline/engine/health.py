"""Is anything putting the backups at risk? The conditions the alerting sensor watches.

Each condition that holds is an open incident, identified by a key; the sensor alerts when a key
appears and sends "resolved" when it goes away. ``now`` is passed in, so the conditions can be
evaluated at any chosen time (tests do exactly that).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.store import BackupStore


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def newest_fulls(store: BackupStore, keyring: KeyRing) -> dict[str, tuple[datetime, str]]:
    """For each collection, (time, backup id) of its newest authenticated full backup."""
    out: dict[str, tuple[datetime, str]] = {}
    for ref in reversed(store.refs(backup_type="full")):
        try:
            m = store.load_manifest(ref, keyring)
        except BmcError:
            continue  # an unreadable backup does not count as a backup
        taken = datetime.fromisoformat(m["backup_metadata"]["timestamp"])
        for c in m.get("collections", {}):
            out.setdefault(c, (taken, ref.backup_id))
    return out


def risks(
    settings: Settings, store: BackupStore, keyring: KeyRing, now: datetime
) -> dict[str, Alert]:
    """Open incidents at ``now``, by key."""
    a = settings.alerts
    out: dict[str, Alert] = {}
    at = now.isoformat()
    fulls = newest_fulls(store, keyring)
    for c in settings.collections:
        taken, bid = fulls.get(c, (None, None))
        age_h = (now - taken).total_seconds() / 3600 if taken else None
        if age_h is None or age_h > a.stale_full_hours:
            since = f"for {age_h:.0f} h (last {bid})" if age_h is not None else "ever"
            out[f"stale:{c}"] = Alert(
                key=f"stale:{c}", severity="critical",
                title=f"no successful full backup of {c} {since}",
                text=f"The newest full backup of {c} is older than {a.stale_full_hours:g} h. "
                     "Check the full_backup_job runs in the Dagster UI and 'bmc-backup list'.",
                collection=c, backup_id=bid, at=at,
            )  # fmt: skip
    # the 02:00 full and the 6-hourly incremental: late when nothing was published since the tick
    newest_any = max(
        (r.timestamp for r in store.refs() if r.backup_type != "rollback"), default=None
    )
    newest_full = max((t for t, _ in fulls.values()), default=None)
    day_tick = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if day_tick > now:
        day_tick -= timedelta(days=1)
    six_tick = now.replace(hour=now.hour - now.hour % 6, minute=0, second=0, microsecond=0)
    for key, tick, newest, what in (
        ("late:full", day_tick, newest_full, "full backup (02:00 UTC)"),
        ("late:incremental", six_tick, newest_any, "incremental backup (every 6 h)"),
    ):
        late_h = (now - tick).total_seconds() / 3600
        if late_h > a.late_hours and (newest is None or newest < tick):
            out[key] = Alert(
                key=key, severity="warning", title=f"the scheduled {what} is {late_h:.1f} h late",
                text=f"Nothing was published since {tick.isoformat()}. Is the Dagster daemon running?",
                at=at,
            )  # fmt: skip
    usage = shutil.disk_usage(_existing(store.root))
    free_pct = 100 * usage.free / usage.total
    if free_pct < a.min_free_percent:
        out["space"] = Alert(
            key="space", severity="critical",
            title=f"only {free_pct:.1f} % free where backups are stored",
            text=f"{usage.free >> 20} MiB free of {usage.total >> 20} MiB on the file system of "
                 f"{store.root} (threshold {a.min_free_percent:g} %). Free space or run 'bmc-backup rotate'.",
            at=at,
        )  # fmt: skip
    return out


def resolved(alert: Alert, now: datetime) -> Alert:
    return Alert(
        key=alert.key, severity="resolved", title=f"resolved: {alert.title}",
        text="The condition no longer holds.", collection=alert.collection,
        backup_id=alert.backup_id, at=now.isoformat(),
    )  # fmt: skip
