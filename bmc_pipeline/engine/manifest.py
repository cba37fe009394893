"""The manifest of a backup point as typed objects: built by backups and rollback points, read by
restores, validation, export, health, retention, the remote copy and the scanner.

The JSON shape is archive format v1 (docs/FORMAT.md) and does not change here: models keep keys
they do not know (``extra="allow"``), and :meth:`Manifest.as_dict` writes exactly the keys that
were set, so a manifest read and written again is the same document. The manifest's MAC is
computed over that dict by :mod:`.store`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bmc_pipeline.engine.archive import ArchiveStats
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import IntegrityError

FORMAT = 1  # the archive format a manifest describes; readers refuse others (docs/FORMAT.md)
PARTS = ("documents", "tombstones", "index")
BLOB_NAME = re.compile(r"[0-9a-f]{64}")  # a file blob's id, and its file's name


# an archive's place: "<payload directory>/<file>", plain names only (no "..", no "/" inside)
def plain_relative(rel: str) -> bool:
    """A file path that cannot leave the directory it is joined to: not empty, not absolute, no
    backslash or NUL, and no empty, ``.`` or ``..`` part."""
    return (
        bool(rel)
        and "\\" not in rel
        and "\x00" not in rel
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    )


_ARCHIVE_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ArchiveEntry(_Open):
    """One archive file of a collection: where it is, what it holds, and both checksums."""

    file: str
    documents: int
    raw_bytes: int
    stored_bytes: int
    segments: int
    sha256: str
    stored_sha256: str
    key_id: str

    @field_validator("file")
    @classmethod
    def _inside(cls, v: str) -> str:
        """Every name read from a manifest is checked before it becomes a path."""
        if not _ARCHIVE_FILE.fullmatch(v) or ".." in v:
            raise ValueError(f"{v!r} is not an archive file of the backup's own directory")
        return v

    @classmethod
    def of(cls, file: str, stats: ArchiveStats) -> ArchiveEntry:
        return cls(
            file=file,
            documents=stats.documents,
            raw_bytes=stats.raw_bytes,
            stored_bytes=stats.stored_bytes,
            segments=stats.segments,
            sha256=stats.sha256,
            stored_sha256=stats.stored_sha256,
            key_id=stats.key_id,
        )


class StateEntry(_Open):
    """The collection's state at the backup point: document count and order-independent digest."""

    documents: int
    digest: str

    def digest_value(self) -> StateDigest:
        return StateDigest.parse(self.documents, self.digest)


class CollectionEntry(_Open):
    """One collection's part of a backup point."""

    mode: str  # full, incremental or rollback
    parent: str | None = None
    watermark: str | None = None  # where the next incremental's timestamp query starts
    read_until: str | None = None  # the read ended: the state of any time after it (capture)
    timestamp_field: str | None = None
    change_detection: str | None = None  # full, timestamp or hash
    documents: ArchiveEntry
    tombstones: ArchiveEntry | None = None
    index: ArchiveEntry | None = None
    state: StateEntry
    metadata: dict[str, Any] = {}
    duration_s: float | None = None

    def archive(self, part: str) -> ArchiveEntry | None:
        """The entry of ``part`` (``documents``, ``tombstones`` or ``index``), if it has one."""
        value = getattr(self, part)
        assert value is None or isinstance(value, ArchiveEntry)
        return value


class BackupMetadata(_Open):
    """The seed's ``backup_metadata`` envelope, plus our ids and format number."""

    timestamp: str
    backup_type: str
    version: str
    database: str
    backup_id: str
    format: int = FORMAT
    tool: str | None = None  # backups: the program and version that wrote it
    restore_of: str | None = None  # rollback points: the backup the restore read
    strategy: str | None = None  # rollback points: the restore's strategy

    @property
    def taken(self) -> datetime:
        return datetime.fromisoformat(self.timestamp)


class Manifest(_Open):
    """A whole manifest (without its ``authentication`` section, which the store adds)."""

    backup_metadata: BackupMetadata
    collections: dict[str, CollectionEntry] = {}
    filesystem: dict[str, Any] = {}
    checksums: dict[str, str] = {}

    @field_validator("filesystem")
    @classmethod
    def _plain_files(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Blob ids are hex names and file paths relative, so neither can lead out of a root."""
        files = v.get("files") or {}
        if not isinstance(files, dict):
            raise ValueError("filesystem.files is not an object of file entries")
        for rel, f in files.items():
            if not plain_relative(str(rel)):
                raise ValueError(f"file path {rel!r} is not a plain relative path")
            if not isinstance(f, dict) or not BLOB_NAME.fullmatch(str(f.get("blob", ""))):
                raise ValueError(
                    f"file {rel!r} names blob {f.get('blob') if isinstance(f, dict) else f!r}, which is not a blob id"
                )
        return v

    def outside(self, payload_dir: str) -> list[str]:
        """Archive files that are not in ``payload_dir`` (the backup's own directory)."""
        return [
            a.file
            for c in self.collections.values()
            for a in (c.documents, c.tombstones, c.index)
            if a is not None and a.file.split("/")[0] != payload_dir
        ]

    @classmethod
    def parse(cls, doc: dict[str, Any], *, name: str, path: str = "") -> Manifest:
        """The typed manifest of an (authenticated) document, or an error naming what is wrong."""
        body = {k: v for k, v in doc.items() if k != "authentication"}
        try:
            manifest = cls.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise IntegrityError(
                f"{name} is not a valid manifest: {where}: {first['msg']}",
                path=path,
                reason="manifest-shape",
            ) from None
        fmt = manifest.backup_metadata.format
        if fmt != FORMAT:
            raise IntegrityError(
                f"{name} is written in archive format {fmt}, which this version does not read "
                f"(it reads format {FORMAT}); use a newer bmc_pipeline",
                path=path,
                reason="manifest-format",
            )
        return manifest

    def as_dict(self) -> dict[str, Any]:
        """The JSON document, with exactly the keys that were set (v1 as written before)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def blobs(self) -> list[str]:
        """The content-addressed blobs the file snapshot names, sorted."""
        return sorted({f["blob"] for f in self.filesystem.get("files", {}).values()})

    def stored_bytes(self) -> int:
        """Bytes the collections' archives take on disk (file blobs are shared, not counted)."""
        return sum(
            a.stored_bytes
            for c in self.collections.values()
            for a in (c.documents, c.tombstones, c.index)
            if a is not None
        )

    @property
    def taken(self) -> datetime:
        return self.backup_metadata.taken
