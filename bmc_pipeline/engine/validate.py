"""Full verification of a published backup, the work behind ``bmc-backup validate``.

For the manifest: it parses, names this backup, and its MAC verifies. For every archive it lists:
the file exists with the recorded size, every segment authenticates, the payload decompresses into
whole BSON documents, the document count and both SHA-256 checksums (plaintext and stored bytes)
match. For the file snapshot: every blob exists and authenticates. Each failure is reported with
the file and the reason, and validation goes on to the next file so one report shows everything.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.bsonstream import bson_documents
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError, IntegrityError
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.manifest import PARTS, ArchiveEntry, Manifest
from bmc_pipeline.engine.rawbson import decode_id, id_element
from bmc_pipeline.engine.spillmap import SpillMap
from bmc_pipeline.engine.store import BackupRef, BackupStore


@dataclass
class FileCheck:
    file: str
    ok: bool
    documents: int | None = None
    error: str | None = None


@dataclass
class ValidationReport:
    backup_id: str
    ok: bool = True
    manifest_ok: bool = False
    checks: list[FileCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def fail(self, msg: str, file: str | None = None) -> None:
        self.ok = False
        self.errors.append(msg)
        if file is not None:
            self.checks.append(FileCheck(file=file, ok=False, error=msg))

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "ok": self.ok,
            "manifest_ok": self.manifest_ok,
            "files": [c.__dict__ for c in self.checks],
            "errors": self.errors,
        }


def verify_archive(
    path: Path, entry: ArchiveEntry, keyring: KeyRing, label: str, *, unique_ids: bool = False
) -> int:
    """Read one archive to the end and compare it with its manifest entry; returns the count.

    Raises :class:`IntegrityError` for any difference (a missing file included), and
    :class:`KeyConfigError` when the key that wrote it is not configured. With ``unique_ids``,
    two documents with one ``_id`` are a difference too (a restore of them could not verify).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IntegrityError(f"{label} is missing", path=str(path), reason="missing") from None
    if size != entry.stored_bytes:
        what = "truncated" if size < entry.stored_bytes else "has extra bytes"
        raise IntegrityError(
            f"{label}: file is {size} bytes, the manifest says {entry.stored_bytes}: it {what}",
            path=str(path),
            reason="size",
        )
    seen = SpillMap()  # flat memory however many documents (on disk past a size)
    repeated: list[str] = []
    with closing(seen), path.open("rb") as fh:
        reader = ArchiveReader(fh, keyring, name=label, declared_raw=entry.raw_bytes)
        for batch in reader.raw_batches():
            if not unique_ids:
                continue
            for raw in bson_documents(bytes(batch), where=label):
                elem = id_element(raw)
                if elem in seen:
                    repeated.append(str(decode_id(elem)))
                seen[elem] = b""
        stats = reader.stats
    if repeated:
        raise IntegrityError(
            f"{label}: {len(repeated)} document(s) repeat an _id already in the archive (e.g. "
            f"{', '.join(repeated[:3])}); a restore of it would not verify",
            path=str(path),
            reason="duplicate-id",
        )
    for ours, theirs, what in (
        (stats.stored_sha256, entry.stored_sha256, "SHA-256 of the stored bytes"),
        (stats.sha256, entry.sha256, "SHA-256 of the BSON stream"),
        (stats.documents, entry.documents, "document count"),
    ):
        if ours != theirs:
            raise IntegrityError(
                f"{label}: {what} ({ours}) does not match the manifest ({theirs})",
                path=str(path),
                reason="checksum",
            )
    return stats.documents


def archives_of(manifest: Manifest) -> list[tuple[str, ArchiveEntry]]:
    """(collection/part label, archive entry) for every archive a manifest lists."""
    out = []
    for name, c in manifest.collections.items():
        for part in PARTS:
            archive = c.archive(part)
            if archive is not None:
                out.append((f"{name}/{part}", archive))
    return out


def validate_backup(
    store: BackupStore, ref: BackupRef, keyring: KeyRing, *, blobs: BlobStore | None = None
) -> ValidationReport:
    report = ValidationReport(backup_id=ref.backup_id)
    try:
        manifest = store.load_manifest(ref, keyring)
    except BmcError as exc:
        report.fail(str(exc), file=ref.manifest_path.name)
        return report
    report.manifest_ok = True
    report.checks.append(FileCheck(file=ref.manifest_path.name, ok=True))
    base = ref.manifest_path.parent
    for label, entry in archives_of(manifest):
        rel = entry.file
        path = (base / rel).resolve()
        if not path.is_relative_to(ref.payload_dir.resolve()):
            report.fail(f"{label}: file {rel!r} is outside the backup's directory", file=rel)
            continue
        try:
            unique = not label.endswith("/tombstones")  # documents and index: one entry per id
            n = verify_archive(
                path, entry, keyring, f"backup {ref.backup_id}: {rel}", unique_ids=unique
            )
        except BmcError as exc:
            report.fail(str(exc), file=rel)
            continue
        report.checks.append(FileCheck(file=rel, ok=True, documents=n))
    files = manifest.filesystem.get("files", {})
    if files and blobs is not None:
        for fpath, f in files.items():
            label = f"blob {f['blob']} ({fpath})"
            try:
                size = sum(len(c) for c in blobs.read(f["blob"]))
            except FileNotFoundError:
                report.fail(f"backup {ref.backup_id}: {label} is missing", file=fpath)
                continue
            except BmcError as exc:
                report.fail(f"backup {ref.backup_id}: {exc}", file=fpath)
                continue
            if size != f["size"]:
                report.fail(f"{label}: {size} bytes, the manifest says {f['size']}", file=fpath)
                continue
            report.checks.append(FileCheck(file=fpath, ok=True))
    return report
