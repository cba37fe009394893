"""``bmc-backup doctor``: check a deployment before it is needed, and say how to fix each problem.

Checks the key (present, 0600), the backup directory's permissions (directories 0755, files
0600, as written), free space against the newest full backup, the remote copy (reachable, holding
every local backup), MongoDB connectivity, the Dagster instance, the API's tokens and TLS
settings, and the audit log's chain. A failed check makes the
exit code 1; warnings do not.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.capture.sources import detect_source
from bmc_pipeline.engine.capture.status import capture_problems, capture_status
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError, ConfigError
from bmc_pipeline.engine.mongo import masked_uri
from bmc_pipeline.engine.watchdog import backup_problems, collection_table
from bmc_pipeline.jobs.history import daemon_health


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    message: str
    fix: str | None = None


def _keyring(settings: Settings, checks: list[Check]) -> KeyRing | None:
    try:
        ring = Deployment(settings).keyring()
    except BmcError as exc:
        checks.append(Check("key", "fail", str(exc), "bmc-backup keygen --out <file>; chmod 600"))
        return None
    src = settings.encryption.key_file or "BMC_BACKUP_KEY"
    checks.append(
        Check(
            "key",
            "ok",
            f"{len(ring.key_ids)} key(s) from {src}; new backups use {ring.primary.key_id}",
        )
    )
    return ring


def _permissions(settings: Settings, checks: list[Check]) -> None:
    root = settings.backup_dir
    if not root.exists():
        checks.append(
            Check(
                "permissions", "warn", f"backup directory {root} does not exist yet", "run a backup"
            )
        )
        return
    want_dir, want_file = settings.storage.dir_mode, settings.storage.file_mode
    bad_dirs, bad_files = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            if stat.S_IMODE(p.lstat().st_mode) != want_dir:
                bad_dirs.append(p)
        for f in filenames:
            p = Path(dirpath) / f
            if stat.S_IMODE(p.lstat().st_mode) != want_file:
                bad_files.append(p)
    if stat.S_IMODE(root.stat().st_mode) != want_dir:
        bad_dirs.append(root)
    if bad_dirs or bad_files:
        examples = ", ".join(str(p) for p in (bad_dirs + bad_files)[:3])
        checks.append(
            Check(
                "permissions",
                "fail",
                f"{len(bad_dirs)} director(ies) not {want_dir:o} and {len(bad_files)} file(s) "
                f"not {want_file:o} under {root} (e.g. {examples})",
                f"find {root} -type d -exec chmod {want_dir:o} {{}} + && "
                f"find {root} -type f -exec chmod {want_file:o} {{}} +",
            )
        )
    else:
        checks.append(
            Check(
                "permissions",
                "ok",
                f"{root}: directories {want_dir:o}, files {want_file:o}",
            )
        )
    for name, value in (
        ("tokens file", settings.api.tokens_file),
        ("audit log", settings.audit.path),
    ):
        p = settings.path(value)
        if p.exists() and stat.S_IMODE(p.stat().st_mode) & 0o077:
            checks.append(
                Check("permissions", "fail", f"{name} {p} is readable by others", f"chmod 600 {p}")
            )


def _space(settings: Settings, ring: KeyRing | None, checks: list[Check]) -> None:
    p = settings.backup_dir
    while not p.exists() and p != p.parent:
        p = p.parent
    usage = shutil.disk_usage(p)
    free_pct = 100 * usage.free / usage.total if usage.total else 0.0
    need = 0
    store = Deployment(settings).store()
    fulls = store.refs(backup_type="full") if settings.backup_dir.exists() else []
    if fulls:
        row = store.describe(fulls[-1], ring)
        need = 2 * int(row.get("size_bytes") or 0)
    msg = f"{usage.free / 2**30:.1f} GiB free ({free_pct:.0f} %) on the backup volume"
    if free_pct < settings.alerts.min_free_percent or usage.free < need:
        why = f"; the newest full backup needs {need / 2**20:.0f} MiB twice over" if need else ""
        checks.append(
            Check("free space", "fail", msg + why, "free space, or lower the retention counts")
        )
    else:
        checks.append(Check("free space", "ok", msg))


def _mongodb(settings: Settings, checks: list[Check]) -> None:
    try:
        db = Deployment(settings).database()
        reply = db.client.server_info()
        names = sorted(db.list_collection_names())
    except Exception as exc:  # every driver error means the same thing here: not reachable
        checks.append(
            Check(
                "mongodb",
                "fail",
                f"cannot reach {settings.mongodb.database} at the configured URI: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
                "start the server (bmc-backup devdb start for the local one) or set MONGODB_URI",
            )
        )
        return
    missing = [c for c in settings.collections if c not in names]
    note = f"; not there yet: {', '.join(missing)}" if missing else ""
    checks.append(
        Check(
            "mongodb",
            "ok",
            f"connected (server {reply.get('version', '?')}); {len(names)} collection(s){note}",
        )
    )


def _capture(settings: Settings, ring: KeyRing | None, checks: list[Check]) -> None:
    """Which change source continuous capture would read, and how far behind it is."""
    try:
        db = Deployment(settings).database()
        source = detect_source(
            db.client, db.name, masked_uri(settings.mongodb.uri), prefer=settings.capture.source
        )
    except ConfigError as exc:  # no change log: capture cannot run against this server
        level = "fail" if settings.capture.enabled else "warn"
        checks.append(Check("capture", level, str(exc).split(". ")[0], "see docs/CAPTURE.md"))
        return
    except Exception:  # the mongodb check already says the server is unreachable
        return
    said = f"source: {source.name}"
    if ring is not None:
        status = capture_status(Deployment(settings).store(), ring, datetime.now(timezone.utc))
        found = capture_problems(status, settings)
        if status and "error" not in status:
            said += (
                f"; recoverable until {status['recoverable_until']} ({status['lag_s']} s behind)"
            )
        if found:
            checks.append(Check("capture", "fail", f"{said}; {'; '.join(found)}",
                                "start bmc-backup capture; take a full backup after a gap"))  # fmt: skip
            return
    checks.append(Check("capture", "ok", said))


def _dagster(settings: Settings, checks: list[Check]) -> None:
    import dagster as dg

    from bmc_pipeline.jobs.history import dagster_home

    try:
        home = dagster_home(settings)
        with dg.DagsterInstance.get() as instance:
            runs = len(instance.get_run_records(limit=1000))
    except Exception as exc:  # an instance that does not open is the finding, whatever the cause
        checks.append(
            Check(
                "dagster",
                "fail",
                f"the Dagster instance does not open: {exc}",
                "check DAGSTER_HOME and its dagster.yaml",
            )
        )
        return
    checks.append(Check("dagster", "ok", f"instance at {home}: {runs} run(s) recorded"))
    with dg.DagsterInstance.get() as instance:
        daemon = daemon_health(
            instance, datetime.now(timezone.utc), settings.alerts.daemon_heartbeat_max_age_s
        )
    if daemon["running"]:
        checks.append(Check("dagster daemon", "ok", f"heartbeat {daemon['heartbeat_age_s']} s ago"))
    else:
        checks.append(
            Check(
                "dagster daemon",
                "warn",
                f"not running: {daemon['why']}; schedules, sensors (alerts) and the drill stop",
                "run 'dagster-daemon run' as a service (or cron the backups and "
                "'bmc-backup status --check')",
            )
        )


def _backup_ages(settings: Settings, ring: KeyRing | None, checks: list[Check]) -> None:
    """How old each collection's newest full backup and newest backup point are."""
    if ring is None:
        return
    now = datetime.now(timezone.utc)
    d = Deployment(settings)
    rows = collection_table(settings, d.store(), ring, now, [])
    found = backup_problems(rows, settings, now)
    if found:
        checks.append(
            Check("backup ages", "warn", "; ".join(found), "bmc-backup backup (and see 'status')")
        )
    else:
        checks.append(Check("backup ages", "ok", f"{len(rows)} collection(s) backed up recently"))


def _api(settings: Settings, checks: list[Check]) -> None:
    from bmc_pipeline.api.serve import is_loopback
    from bmc_pipeline.api.tokens import TokenStore

    try:
        tokens = TokenStore.for_settings(settings).tokens()
    except BmcError as exc:
        checks.append(Check("api tokens", "fail", str(exc)))
        return
    admins = [t.name for t in tokens if t.role == "admin"]
    if not admins:
        checks.append(
            Check(
                "api tokens",
                "warn",
                "no admin API token: the HTTP API answers 401 to everything",
                "bmc-backup api-token create --name <who>",
            )
        )
    else:
        checks.append(
            Check("api tokens", "ok", f"{len(admins)} admin token(s): {', '.join(admins)}")
        )
    a = settings.api
    if not is_loopback(a.host) and not (a.tls_cert and a.tls_key):
        checks.append(
            Check(
                "api tls",
                "warn",
                f"api.host is {a.host} but no certificate is configured: 'api serve' will refuse",
                "set api.tls_cert and api.tls_key",
            )
        )


def _remote(settings: Settings, checks: list[Check]) -> None:
    deployment = Deployment(settings)
    try:
        remote = deployment.remote()
        if remote is None:
            checks.append(
                Check(
                    "remote copy",
                    "warn",
                    "no remote copy: backups exist only on this machine's disk",
                    "set storage.remote_url (docs/STORAGE.md)",
                )
            )
            return
        there = set(remote.backup_ids())
    except BmcError as exc:
        checks.append(
            Check("remote copy", "fail", str(exc), "check storage.remote_url and credentials")
        )
        return
    local = [r.backup_id for r in deployment.store().refs()] if settings.backup_dir.exists() else []
    missing = [b for b in local if b not in there]
    if missing:
        checks.append(
            Check(
                "remote copy",
                "fail",
                f"{len(missing)} local backup(s) not at {remote.url} (e.g. {missing[-1]})",
                "bmc-backup push --all",
            )
        )
    else:
        checks.append(Check("remote copy", "ok", f"{len(there)} backup(s) at {remote.url}"))


def _audit(settings: Settings, ring: KeyRing | None, checks: list[Check]) -> None:
    from bmc_pipeline.engine.audit import audit_log_for

    result = audit_log_for(settings, ring).verify()
    if not result.ok:
        checks.append(
            Check(
                "audit log",
                "fail",
                str(result.message),
                "find out who changed the log; keep the damaged file as evidence",
            )
        )
    elif result.lines == 0:
        checks.append(Check("audit log", "ok", "empty so far"))
    else:
        extra = f"; {result.unkeyed} line(s) without a MAC" if result.unkeyed else ""
        checks.append(Check("audit log", "ok", f"{result.lines} line(s), chain intact{extra}"))


def run_doctor(settings: Settings) -> dict[str, Any]:
    checks: list[Check] = []
    ring = _keyring(settings, checks)
    _permissions(settings, checks)
    _space(settings, ring, checks)
    _remote(settings, checks)
    _mongodb(settings, checks)
    _capture(settings, ring, checks)
    _dagster(settings, checks)
    _backup_ages(settings, ring, checks)
    _api(settings, checks)
    _audit(settings, ring, checks)
    return {
        "ok": not any(c.status == "fail" for c in checks),
        "checks": [asdict(c) for c in checks],
    }
