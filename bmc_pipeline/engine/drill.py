"""The restore drill: proof, every day, that the stored backups restore.

A drill restores the newest restorable point of every collection, and the files, into a scratch
database (``<database>_drill``, never the live one) and a scratch directory, exactly as a real
restore would (chain authenticated, documents planned, written, read back; indexes recreated),
then checks each collection's state digest and index set against the backup's, records how long
it took (the recovery time objective the backups really give) and drops the scratch copies. A
drill that fails alerts through the configured channels and is recorded like one that passes, in
``drill.log_file``, which ``status`` reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert, Notifier
from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BackupNotFoundError, BmcError, ConfigError
from bmc_pipeline.engine.records import read_records
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.restore.files import files_point
from bmc_pipeline.engine.restore.write import Log, quiet
from bmc_pipeline.engine.store import BackupStore

KEEP_LINES = 1000  # drill records kept in the log (about three years of daily drills)


@dataclass
class CollectionDrill:
    backup_id: str
    documents: int
    seconds: float
    verified: bool
    problems: list[str] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return round(self.documents / self.seconds, 1) if self.seconds > 0 else 0.0


@dataclass
class DrillReport:
    at: str
    scratch_database: str
    ok: bool = False
    rto_s: float = 0.0  # from the first read of a backup to the last collection verified
    collections: dict[str, CollectionDrill] = field(default_factory=dict)
    files: int = 0
    files_verified: bool | None = None
    error: str | None = None

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections.values())

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["documents"] = self.documents
        d["docs_per_s"] = round(self.documents / self.rto_s, 1) if self.rto_s > 0 else 0.0
        for name, c in self.collections.items():
            d["collections"][name]["docs_per_s"] = c.docs_per_s
        return d


def scratch_name(settings: Settings) -> str:
    """The scratch database, refused when it would be the live one."""
    live = settings.mongodb.database
    name = settings.drill.database or f"{live}_drill"
    if name == live:
        raise ConfigError(
            f"drill.database is {name!r}, the live database: the drill would overwrite it; "
            f"leave drill.database unset (it is then {live + '_drill'!r}) or name another one"
        )
    return name


def run_drill(
    settings: Settings,
    client: Any,
    store: BackupStore,
    keyring: KeyRing,
    *,
    notifier: Notifier | None = None,
    log: Log = quiet,
) -> DrillReport:
    """Restore everything into scratch copies, verify, time it, drop the copies, record it."""
    name = scratch_name(settings)
    report = DrillReport(at=datetime.now(timezone.utc).isoformat(), scratch_database=name)
    client.drop_database(name)
    scratch_files = Path(tempfile.mkdtemp(prefix=".drill-files-", dir=_root(store)))
    started = time.monotonic()
    try:
        engine = RestoreEngine(settings, client[name], store, keyring, log=log)
        point = engine.restore_point(
            "latest", None, files_to=scratch_files if _has_files(store, keyring) else None,
            rollback_point=False,
        )  # fmt: skip
        report.rto_s = round(time.monotonic() - started, 3)
        for cname, r in point.collections.items():
            bad = [] if r.verified else r.verification
            report.collections[cname] = CollectionDrill(
                r.backup_id, r.inserted, round(r.duration_s, 3), r.verified, bad
            )
        if point.files is not None:
            report.files = point.files.restored
            report.files_verified = point.files.verified
        report.ok = point.verified
    except BmcError as exc:  # a corrupt archive, a missing key, an unreachable server...
        report.error = str(exc)
        report.rto_s = round(time.monotonic() - started, 3)
    finally:
        client.drop_database(name)
        shutil.rmtree(scratch_files, ignore_errors=True)
    record(settings, report)
    if not report.ok and notifier is not None:
        notifier.send(failure_alert(report))
    log(
        f"drill {'passed' if report.ok else 'FAILED'}: {report.documents} documents in {report.rto_s} s"
    )
    return report


def _root(store: BackupStore) -> Path:
    store.mkdir(store.root)
    return store.root


def _has_files(store: BackupStore, keyring: KeyRing) -> bool:
    """Whether any backup holds the files (the restore then takes the newest that does)."""
    try:
        files_point(store, keyring, "latest")
    except BackupNotFoundError:
        return False
    return True


def failure_alert(report: DrillReport) -> Alert:
    if report.error:
        why = report.error
    else:
        bad = {n: c.problems for n, c in report.collections.items() if not c.verified}
        why = "; ".join(f"{n}: {'; '.join(p)}" for n, p in bad.items()) or "files did not verify"
    return Alert(
        key="drill",
        severity="critical",
        title="the restore drill failed: the stored backups may not restore",
        text=f"{why}. Run 'bmc-backup validate latest' and 'bmc-backup drill' to see it again.",
        at=report.at,
    )


def record(settings: Settings, report: DrillReport) -> None:
    """Append the drill to ``drill.log_file`` (one JSON line each, the newest kept)."""
    path = settings.path(settings.drill.log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines.append(json.dumps(report.as_dict(), ensure_ascii=False))
    # whole or not at all: a crash while recording must not lose the drills before it
    text = "\n".join(lines[-KEEP_LINES:]) + "\n"
    write_atomic(path, text.encode("utf-8"), mode=0o644)


def drill_history(settings: Settings) -> list[dict[str, Any]]:
    """Recorded drills, oldest first."""
    return read_records(settings.path(settings.drill.log_file))
