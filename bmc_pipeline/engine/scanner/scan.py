"""A scan from start to end: files and MongoDB in, a report out; and the configured scan."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.scanner.archives import scan_archive
from bmc_pipeline.engine.scanner.discovery import candidate_files
from bmc_pipeline.engine.scanner.fold import ConversationFold, Spool
from bmc_pipeline.engine.scanner.mongodb import scan_mongodb
from bmc_pipeline.engine.scanner.progress import Log, Progress, quiet
from bmc_pipeline.engine.scanner.reading import FileReport
from bmc_pipeline.engine.scanner.report import ScanReport, analyse
from bmc_pipeline.engine.scanner.workers import batches_of, file_size, run_batches
from bmc_pipeline.engine.store import backup_id_of_manifest
from bmc_pipeline.engine.vocabulary import Source, choices


def scan(
    *,
    root: Path | None,
    directories: list[str],
    patterns: list[str],
    db: Any | None,
    collections: dict[str, str | None],
    conversations_collection: str = "conversations",
    sensitive: set[str] | None = None,
    schemas: Mapping[str, Mapping[str, str]] | None = None,
    samples: int = 3,
    workers: int = 2,
    date_fields: frozenset[str] = frozenset({"created_at", "updated_at"}),
    keyring: KeyRing | None = None,
    log: Log = quiet,
    progress: Progress | None = None,
    not_scanned: str | None = None,
) -> ScanReport:
    """Scan the filesystem under ``root`` (if given) and the database (if given).

    Our own backups met on the way (their manifests match ``backup*.json``) are read through
    their manifests when ``keyring`` is given. ``progress`` is told how many bytes of the files
    have been read, about twice a second. ``not_scanned`` is the advice the report gives when
    ``root`` is None (by default: how to scan files too).
    """
    report = ScanReport(
        generated_at=datetime.now(timezone.utc).isoformat(),
        root=str(root) if root else None,
        database=getattr(db, "name", None),
        date_fields=date_fields,
    )
    with tempfile.TemporaryDirectory(prefix="bmc-scan-") as tmp:
        found = ConversationFold(Path(tmp))
        if root is not None:
            paths, report.problems = candidate_files(root, directories, patterns)
            # files are numbered in path order (the report's order, and the tie-break between
            # versions) but handed to the workers largest first, so that one huge file does not
            # start last and leave the other workers idle
            paths = sorted(paths, key=str)
            slots: list[FileReport | None] = [None] * len(paths)
            ours = Spool(Path(tmp) / "ours.jsonl")
            for i, p in enumerate(paths):
                if backup_id_of_manifest(p.name) is not None:  # our own backups, in process
                    slots[i] = scan_archive(p, keyring, ours, i, date_fields)
            ours.close()
            found.load(ours.path)
            todo = sorted(
                (i for i in range(len(paths)) if slots[i] is None),
                key=lambda i: -file_size(paths[i]),
            )
            total = sum(file_size(paths[i]) for i in todo)
            log(
                f"scanning {len(todo)} file(s) ({total / 1e6:.1f} MB) under {root} "
                f"with {workers} worker(s)"
            )
            tasks = batches_of([(str(paths[i]), i) for i in todo], paths)
            spools = [Path(tmp) / f"batch{n}.jsonl" for n in range(len(tasks))]
            # records are folded in as each batch finishes, while the others run
            for results, spool in run_batches(tasks, spools, date_fields, workers, total, progress):
                for i, fr in results:
                    slots[i] = fr
                found.load(spool)
            report.files = [fr for fr in slots if fr is not None]
        if db is not None and collections:
            log(f"scanning MongoDB collections: {', '.join(collections)}")
            report.mongodb = scan_mongodb(db, collections, sensitive or set(), samples, schemas)
        if root is None:
            nothing_found = not_scanned or (
                "files were not scanned: scan with --source all (or filesystem) to look for "
                "conversations on disk that MongoDB lacks"
            )
        elif not report.files:
            where = ", ".join(
                f"{d}/" if d not in (".", "") else "the root itself" for d in directories
            )
            nothing_found = (
                f"no file to scan under {root}: the scan looks in {where} for "
                f"{', '.join(patterns)} (and their .gz/.zst copies); point --root at the "
                "directory that holds those folders, or change scanner.directories / "
                "scanner.patterns in backup_config.json"
            )
        else:
            nothing_found = "no conversations found on disk"
        coll = db[conversations_collection] if db is not None else None
        analyse(report, found, coll, nothing_found)
    return report


def _time_field(settings: Settings, name: str) -> str | None:
    """The field a collection's date range is read from: its ``timestamp_field``, else its first
    required field of type date (``analytics`` has ``timestamp`` and no updates)."""
    c = settings.collection(name)
    dates = (f for f, t in c.required_fields.items() if t == "date")
    return c.timestamp_field or next(dates, None)


def scan_settings(
    settings: Settings,
    *,
    source: str | Source = Source.all,
    collection: str | None = None,
    root: Path | None = None,
    db: Any | None = None,
    keyring: KeyRing | None = None,
    log: Log = quiet,
    progress: Progress | None = None,
) -> ScanReport:
    """A scan as configured in ``backup_config.json``; the command line, Dagster and the API share it.

    ``db`` is the database handle for the MongoDB part (required unless ``source`` is
    ``filesystem``); ``root`` defaults to ``files.root``.
    """
    try:
        source = Source(source)
    except ValueError:
        raise BmcError(
            f"unknown scan source {source!r}: use {', '.join(choices(Source))}"
        ) from None
    sc = settings.scanner
    files = source in (Source.filesystem, Source.all)
    missing_root = None
    if files and root is not None and not root.is_dir():
        raise BmcError(f"{root} is not a directory; give the directory to scan")
    if files and root is None and not settings.files_root.is_dir():
        # the configured root is gone: scan what there is, and say so in the report
        missing_root, files = settings.files_root, False
    root = root or settings.files_root
    not_scanned = None
    if missing_root is not None:
        not_scanned = (
            f"the files root {missing_root} (files.root) does not exist, so no files were "
            "scanned; set files.root or BMC_FILES_ROOT, or scan a directory with --root"
        )
    names = [collection] if collection else list(settings.collections)
    conv = settings.collection("conversations")
    # the chatbot's own date fields always, whatever the configuration says of them: a copy that
    # reads them as text would otherwise never match one that reads them as dates
    date_fields = {"created_at", "updated_at"}
    date_fields.update(n for n, t in conv.required_fields.items() if t == "date")
    if conv.timestamp_field:
        date_fields.add(conv.timestamp_field)
    report = scan(
        root=root if files else None,
        directories=sc.directories,
        patterns=sc.patterns,
        db=db if source in (Source.mongodb, Source.all) else None,
        collections={n: _time_field(settings, n) for n in names},
        schemas={n: settings.collection(n).required_fields for n in names},
        sensitive=set(sc.sensitive_fields),
        samples=sc.samples,
        workers=sc.workers,
        date_fields=frozenset(date_fields),
        keyring=keyring,
        log=log,
        progress=progress,
        not_scanned=not_scanned,
    )
    if not_scanned is not None:
        report.problems.insert(0, not_scanned)
    return report
