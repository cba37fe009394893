"""Is anything putting the backups at risk? The conditions the alerting sensor watches.

Each condition that holds is an open incident, identified by a key; the sensor alerts when a key
appears and sends "resolved" when it goes away. ``now`` is passed in, so the conditions can be
evaluated at any chosen time (tests do exactly that).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.records import read_records
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
        for c in m.collections:
            out.setdefault(c, (m.taken, ref.backup_id))
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


@dataclass(frozen=True)
class RunRecord:
    """A finished run of one of our jobs, as the health report needs it."""

    job: str
    success: bool
    at: datetime


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _alert_log(settings: Settings) -> list[dict[str, Any]]:
    return [
        r for r in read_records(settings.path(settings.alerts.log_file)) if r.get("type") == "alert"
    ]


def health_report(
    settings: Settings,
    store: BackupStore,
    keyring: KeyRing,
    runs: list[RunRecord],
    now: datetime,
) -> dict[str, Any]:
    """Backup success rates, storage and its trend, restores, and alerts, at ``now``."""
    report: dict[str, Any] = {"at": now.isoformat()}
    for days in (7, 30):
        since = now - timedelta(days=days)
        backups = [r for r in runs if r.job.endswith("backup_job") and r.at >= since]
        ok = sum(1 for r in backups if r.success)
        report[f"backup_runs_{days}d"] = len(backups)
        report[f"backup_success_rate_{days}d"] = round(ok / len(backups), 3) if backups else None
    stored: list[tuple[datetime, int]] = []
    restores: list[dict[str, Any]] = []
    for ref in store.refs():
        try:
            m = store.load_manifest(ref, keyring)
        except BmcError:
            continue
        taken = m.taken
        stored.append((taken, m.stored_bytes()))
        if ref.backup_type == "rollback":
            restores.append(
                {
                    "rollback_id": ref.backup_id,
                    "at": taken.isoformat(),
                    "restore_of": m.backup_metadata.restore_of,
                    "strategy": m.backup_metadata.strategy,
                    "collections": sorted(m.collections),
                }
            )
    report["storage_bytes"] = _dir_bytes(store.root)
    report["backups"] = sum(1 for r in store.refs() if r.backup_type != "rollback")
    report["stored_last_7d_bytes"] = sum(n for t, n in stored if t >= now - timedelta(days=7))
    report["stored_prev_7d_bytes"] = sum(
        n for t, n in stored if now - timedelta(days=14) <= t < now - timedelta(days=7)
    )
    report["restores"] = list(reversed(restores))[:20]
    report["restores_30d"] = sum(
        1 for r in restores if r["at"] >= (now - timedelta(days=30)).isoformat()
    )
    timeline = _alert_log(settings)
    state: dict[str, dict[str, Any]] = {}
    for rec in timeline:
        if rec["severity"] == "resolved":
            state.pop(rec["key"], None)
        elif not rec["key"].startswith("run:") and rec["severity"] != "info":
            state[rec["key"]] = rec
    report["open_alerts"] = [{"key": k, "severity": v["severity"], "title": v["title"], "since": v["at"]}
                             for k, v in sorted(state.items())]  # fmt: skip
    report["alert_timeline"] = [{"at": r["at"], "severity": r["severity"], "title": r["title"]}
                                for r in timeline[-20:]]  # fmt: skip
    return report


def health_markdown(h: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "no runs" if v is None else f"{100 * v:.0f} %"

    lines = [
        f"# Backup health at {h['at']}",
        "",
        "| | |",
        "|---|---|",
        f"| backup success rate, 7 days | {pct(h['backup_success_rate_7d'])} ({h['backup_runs_7d']} runs) |",
        f"| backup success rate, 30 days | {pct(h['backup_success_rate_30d'])} ({h['backup_runs_30d']} runs) |",
        f"| backups | {h['backups']} |",
        f"| storage used | {h['storage_bytes'] / 1e6:.1f} MB |",
        f"| written in the last 7 days / the 7 before | {h['stored_last_7d_bytes'] / 1e6:.1f} MB / {h['stored_prev_7d_bytes'] / 1e6:.1f} MB |",
        f"| restores in 30 days | {h['restores_30d']} |",
        f"| open alerts | {len(h['open_alerts'])} |",
        "",
    ]
    daemon = h.get("daemon")
    if daemon is not None:
        state = "running" if daemon["running"] else f"NOT RUNNING: {daemon.get('why')}"
        lines[-1:-1] = [f"| Dagster daemon | {state} |"]
    drill = h.get("last_drill")
    if "last_drill" in h:
        said = (
            "never"
            if drill is None
            else (f"{drill['at']}: {'passed' if drill['ok'] else 'FAILED'}, {drill['rto_s']} s")
        )
        lines[-1:-1] = [f"| last restore drill | {said} |"]
    if h.get("collections"):
        lines += [
            "## Collections",
            "",
            "| collection | last full | last incremental | age | documents | recoverable until | last drill |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in h["collections"]:
            age = "never" if r["age_s"] is None else f"{r['age_s'] / 3600:.1f} h"
            drilled = {None: "never", True: "ok", False: "FAILED"}[r["last_drill_ok"]]
            lines.append(
                f"| {r['collection']} | {r['last_full'] or 'never'} | {r['last_incremental'] or 'never'} "
                f"| {age} | {r['documents'] if r['documents'] is not None else ''} "
                f"| {r['recoverable_until'] or ''} | {drilled} |"
            )
        lines.append("")
    cap = h.get("capture")
    if cap and "error" not in cap:
        lines += [
            "## Continuous capture",
            "",
            f"- {cap['source']}: recoverable until {cap['recoverable_until']} "
            f"({cap['lag_s']} s behind), {cap['segments']} segment(s), {cap['changes']} change(s)",
            *[f"- covered: {r['start']} to {r['until']}" for r in cap["ranges"]],
            *[f"- GAP: history lost between {g['after']} and {g['before']}" for g in cap["gaps"]],
            "",
        ]
    elif cap:
        lines += ["## Continuous capture", "", f"- {cap['error']}", ""]
    if h["open_alerts"]:
        lines += [
            "## Open alerts",
            "",
            *[f"- **{a['severity']}** {a['title']} (since {a['since']})" for a in h["open_alerts"]],
            "",
        ]
    if h["restores"]:
        lines += [
            "## Recent restores",
            "",
            "| rollback id | at | restored from | strategy |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['rollback_id']} | {r['at']} | {r['restore_of']} | {r['strategy']} |"
            for r in h["restores"]
        ]
        lines.append("")
    if h["alert_timeline"]:
        lines += [
            "## Alert timeline",
            "",
            *[f"- {a['at']} {a['severity']}: {a['title']}" for a in h["alert_timeline"]],
            "",
        ]
    return "\n".join(lines)
