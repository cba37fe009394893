"""Documents a restore refused, kept encrypted until someone asks to read them.

A refused document (it fails its collection's schema, or MongoDB would not store it) is still
somebody's data: it is kept, with the reason, so a person can fix and re-insert it. It is also
whole customer data (phone numbers, names), so it is written the way backups are: an archive of
this project's format (compressed, AES-256-GCM, authenticated), never plain JSON on disk.
``bmc-backup quarantine list|show|export`` decrypt on demand.

Each quarantine is ``<backup_dir>/quarantine/<id>.bson.zst.enc`` where ``<id>`` is
``<YYYYMMDDTHHMMSSZ>-<collection>`` with a short random suffix; each record is a BSON document
``{"reason": str, "raw": Binary}`` holding the refused document's bytes untouched.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import bson
from bson import json_util

from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.atomic import atomic_write
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BackupNotFoundError, IntegrityError
from bmc_pipeline.engine.store import BackupStore

QUARANTINE_DIR = "quarantine"
QUARANTINE_ID = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z_][A-Za-z0-9_.-]{0,119}-[0-9a-f]{6}$")


class Quarantine:
    """The refused documents of one restore into ``target``, opened on the first one."""

    def __init__(
        self, store: BackupStore, keyring: KeyRing, target: str, *, level: int, segment_size: int
    ) -> None:
        self.store, self.keyring, self.target = store, keyring, target
        self.level, self.segment_size = level, segment_size
        self.path: Path | None = None
        self.count = 0
        self._fh: IO[bytes] | None = None
        self._writer: ArchiveWriter | None = None

    @property
    def quarantine_id(self) -> str | None:
        return self.path.name.removesuffix(ARCHIVE_SUFFIX) if self.path else None

    def add(self, raw: bytes, reason: str) -> None:
        if self._writer is None:
            qdir = self.store.root / QUARANTINE_DIR
            self.store.mkdir(qdir)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self.path = qdir / f"{stamp}-{self.target}-{secrets.token_hex(3)}{ARCHIVE_SUFFIX}"
            self._fh = self.path.open("xb")
            self.path.chmod(self.store.file_mode)
            self._writer = ArchiveWriter(
                self._fh,
                self.keyring,
                level=self.level,
                segment_size=self.segment_size,
                name=self.path.name,
            )
        self._writer.write_document(bson.encode({"reason": reason, "raw": bson.Binary(raw)}))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None and self._fh is not None:
            self._writer.close()
            self._fh.close()
            self._writer = None


@dataclass(frozen=True)
class QuarantineEntry:
    quarantine_id: str
    path: Path
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "quarantine_id": self.quarantine_id,
            "file": f"{QUARANTINE_DIR}/{self.path.name}",
            "size_bytes": self.size_bytes,
        }


def list_quarantines(store: BackupStore) -> list[QuarantineEntry]:
    """Every quarantine in the store, newest first."""
    qdir = store.root / QUARANTINE_DIR
    if not qdir.is_dir():
        return []
    out = []
    for p in qdir.glob(f"*{ARCHIVE_SUFFIX}"):
        qid = p.name.removesuffix(ARCHIVE_SUFFIX)
        if QUARANTINE_ID.fullmatch(qid) and p.is_file():
            out.append(QuarantineEntry(qid, p, p.stat().st_size))
    return sorted(out, key=lambda e: e.quarantine_id, reverse=True)


def quarantine_path(store: BackupStore, quarantine_id: str) -> Path:
    """The file of ``quarantine_id``, or a refusal that says how to find the ids."""
    if not QUARANTINE_ID.fullmatch(quarantine_id):
        raise BackupNotFoundError(
            f"{quarantine_id!r} is not a quarantine id (like 20261201T031200Z-quotes-a1b2c3); "
            "'bmc-backup quarantine list' shows the ones there are"
        )
    path = store.root / QUARANTINE_DIR / f"{quarantine_id}{ARCHIVE_SUFFIX}"
    if not path.is_file():
        raise BackupNotFoundError(
            f"no quarantine {quarantine_id} in {store.root / QUARANTINE_DIR}; "
            "'bmc-backup quarantine list' shows the ones there are"
        )
    return path


def read_quarantine(
    store: BackupStore, keyring: KeyRing, quarantine_id: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(reason, document) of every record, decrypted and checked as it is read."""
    path = quarantine_path(store, quarantine_id)
    with path.open("rb") as fh:
        for raw in ArchiveReader(fh, keyring, name=path.name).documents():
            record = bson.decode(raw)
            try:
                yield str(record["reason"]), bson.decode(bytes(record["raw"]))
            except (KeyError, bson.errors.BSONError) as exc:
                raise IntegrityError(
                    f"{path.name}: a record is not a quarantined document ({exc})",
                    path=str(path),
                    reason="quarantine-record",
                ) from exc


def extended_json_line(reason: str, document: dict[str, Any]) -> str:
    """One record as a line of canonical Extended JSON (types kept: ObjectId, dates)."""
    return str(
        json_util.dumps(
            {"reason": reason, "document": document},
            json_options=json_util.CANONICAL_JSON_OPTIONS,
            ensure_ascii=False,
        )
    )


def export_quarantine(
    store: BackupStore, keyring: KeyRing, quarantine_id: str, out: Path, *, file_mode: int
) -> int:
    """Write the records as Extended JSON lines to ``out`` (mode ``file_mode``, atomically)."""
    n = 0
    with atomic_write(out, mode=file_mode) as fh:
        for reason, document in read_quarantine(store, keyring, quarantine_id):
            fh.write((extended_json_line(reason, document) + "\n").encode())
            n += 1
    return n
