"""Restoring the chatbot's files (knowledge base, ``config.py``, ``.env``) from a backup point.

Like a collection restore, it plans before it writes: every path the manifest names is checked
first (relative, no ``..``, no symbolic link on the way, inside the target directory), and one
bad path refuses the whole restore before anything is written. Files whose content and mode are
already those of the backup are left alone and counted ``unchanged``. The current version of each
file the restore replaces is saved into the blob store first, so ``rollback`` puts it back (and
removes the files the restore created). Each file is written whole (temporary name, fsync,
rename) with its recorded mode, then read again and hashed.
"""

from __future__ import annotations

import fnmatch
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from bmc_pipeline.engine.atomic import atomic_write
from bmc_pipeline.engine.errors import BackupNotFoundError, IntegrityError
from bmc_pipeline.engine.files import BLOB_DIR, BlobStore
from bmc_pipeline.engine.manifest import Manifest, plain_relative
from bmc_pipeline.engine.store import BackupRef, BackupStore


@dataclass
class FileAction:
    path: str
    bytes: int
    action: str  # created, replaced, unchanged, skipped (not selected by --path)
    mode: int = 0o600
    blob: str = ""


@dataclass
class FilesRestoreReport:
    backup_id: str
    target: str
    dry_run: bool
    restored: int = 0
    unchanged: int = 0
    skipped: int = 0
    files: list[FileAction] = field(default_factory=list)
    rollback_id: str | None = None
    verified: bool = False
    verification: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "dry_run": self.dry_run,
            "restored": self.restored,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "files": [{"path": f.path, "bytes": f.bytes, "action": f.action} for f in self.files],
            "rollback_id": self.rollback_id,
            "verified": self.verified,
            "verification": self.verification,
        }


def files_point(
    store: BackupStore, keyring: Any, backup_id: str, point_in_time: datetime | None = None
) -> tuple[BackupRef, Manifest]:
    """The backup whose file snapshot to restore: the named one, or the newest that has files
    (at or before ``point_in_time`` when given)."""
    if backup_id == "latest" or point_in_time is not None:
        for ref in reversed(store.refs()):
            if ref.backup_type == "rollback":
                continue
            m = store.load_manifest(ref, keyring)
            if point_in_time is not None and m.taken > point_in_time:
                continue
            if m.filesystem.get("files"):
                return ref, m
        when = f" at or before {point_in_time.isoformat()}" if point_in_time else ""
        raise BackupNotFoundError(f"no backup in {store.root}{when} holds the chatbot's files")
    ref = store.resolve(backup_id)
    m = store.load_manifest(ref, keyring)
    if not m.filesystem.get("files"):
        raise BackupNotFoundError(
            f"backup {ref.backup_id} holds no files (it was taken with --no-files, or the files "
            "root was missing); 'bmc-backup list' shows which backups have files"
        )
    return ref, m


def safe_destination(root: Path, rel: str, *, where: str) -> Path:
    """``root/rel`` if ``rel`` is a plain relative path that stays inside ``root``, else refuse.

    Refused: empty, absolute or drive paths, ``..`` or ``.`` parts, backslashes, and any existing
    part of the way that is a symbolic link (which could lead the write outside ``root``).
    """
    if not plain_relative(rel):  # the manifest model refuses these too: the same rule
        raise IntegrityError(
            f"{where} names the file {rel!r}, which would leave the target directory; "
            "nothing was restored",
            reason="unsafe-path",
        )
    parts = PurePosixPath(rel).parts
    dest = root.joinpath(*parts)
    walk = root
    for part in parts:
        walk = walk / part
        if walk.is_symlink():
            raise IntegrityError(
                f"{where} names {rel!r}, but {walk} is a symbolic link; nothing was restored "
                "(remove the link, or restore with --to into another directory)",
                reason="unsafe-path",
            )
    if not dest.resolve().is_relative_to(root.resolve()):
        raise IntegrityError(f"{where}: {rel!r} resolves outside {root}", reason="unsafe-path")
    return dest


class FilesPlan:
    """What a files restore will do, decided before anything is written."""

    def __init__(
        self,
        blobs: BlobStore,
        ref: BackupRef,
        manifest: Manifest,
        target: Path,
        patterns: list[str],
        dry_run: bool,
    ) -> None:
        self.blobs, self.target = blobs, target
        self.report = FilesRestoreReport(ref.backup_id, str(target), dry_run)
        where = f"backup {ref.backup_id}"
        entries: dict[str, dict[str, Any]] = manifest.filesystem.get("files", {})
        dests = {rel: safe_destination(target, rel, where=where) for rel in entries}
        self.previous: dict[str, dict[str, Any]] = {}  # rel -> snapshot entry of what is there now
        self.created: list[str] = []
        for rel, e in sorted(entries.items()):
            action = FileAction(rel, int(e["size"]), "skipped", int(e["mode"]), str(e["blob"]))
            self.report.files.append(action)
            if patterns and not any(fnmatch.fnmatch(rel, g) for g in patterns):
                self.report.skipped += 1
                continue
            dest = dests[rel]
            if not dest.exists():
                action.action = "created"
            elif not dest.is_file():
                raise IntegrityError(
                    f"{dest} is not a regular file; move it away to restore {rel}",
                    reason="not-a-file",
                )
            elif stat.S_IMODE(dest.stat().st_mode) == action.mode and blobs.holds(
                action.blob, dest
            ):
                action.action = "unchanged"
                self.report.unchanged += 1
                continue
            else:
                action.action = "replaced"
            self.report.restored += 1

    def writes(self) -> list[FileAction]:
        return [f for f in self.report.files if f.action in ("created", "replaced")]

    def save_current(self) -> dict[str, Any]:
        """Store the versions about to be replaced; the rollback point's ``filesystem`` section."""
        for f in self.writes():
            dest = self.target / f.path
            if f.action == "created":
                self.created.append(f.path)
                continue
            st = dest.stat()
            blob, stored, _ = self.blobs.put(dest)
            self.previous[f.path] = {
                "size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime,
                "blob": blob, "stored_bytes": stored,
            }  # fmt: skip
        return {
            "root": str(self.target),
            "blob_dir": BLOB_DIR,
            "files": self.previous,
            "created": self.created,
        }

    def apply(self) -> None:
        """Write every planned file whole, with its recorded mode, then check what was written."""
        for f in self.writes():
            write_blob(self.blobs, f.blob, self.target / f.path, f.mode)
        check_written(self.blobs, self.target, self.writes(), self.report)


def write_blob(blobs: BlobStore, blob: str, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, mode=mode) as out:
        for chunk in blobs.read(blob):
            out.write(chunk)


def check_written(
    blobs: BlobStore, root: Path, written: list[FileAction], report: FilesRestoreReport
) -> None:
    bad = []
    for f in written:
        dest = root / f.path
        if not (dest.is_file() and blobs.holds(f.blob, dest)):
            bad.append(f"{f.path} does not read back as the backup's content")
        elif stat.S_IMODE(dest.stat().st_mode) != f.mode:
            bad.append(f"{f.path} has mode {stat.S_IMODE(dest.stat().st_mode):o}, not {f.mode:o}")
    report.verification.extend(bad)
    if not bad:
        report.verification.append(
            f"{len(written)} written file(s) read back with the backup's content and mode"
        )
    report.verified = not bad


def rollback_files(blobs: BlobStore, section: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Undo a files restore: put saved versions back, remove created files.

    Returns (files put back, files removed, problems).
    """
    root = Path(section["root"])
    problems: list[str] = []
    for rel in section.get("created", []):
        safe_destination(root, rel, where="the rollback point").unlink(missing_ok=True)
    back = [
        FileAction(rel, int(e["size"]), "replaced", int(e["mode"]), str(e["blob"]))
        for rel, e in section.get("files", {}).items()
    ]
    for f in back:
        write_blob(
            blobs, f.blob, safe_destination(root, f.path, where="the rollback point"), f.mode
        )
    check = FilesRestoreReport("", str(root), False)
    check_written(blobs, root, back, check)
    if not check.verified:
        problems.extend(check.verification)
    return len(back), len(section.get("created", [])), problems
