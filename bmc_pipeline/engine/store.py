"""Where backups live on disk, how they are published, found and authenticated.

Layout (docs/FORMAT.md has the whole specification)::

    <backup_dir>/YYYY-MM-DD/backup_<type>_<YYYYMMDDTHHMMSSZ>_<rand>.json   the manifest
    <backup_dir>/YYYY-MM-DD/backup_<type>_<YYYYMMDDTHHMMSSZ>_<rand>/       its archives

Publication is crash-safe in restic's order: archives are written into a hidden temporary
directory, fsynced and renamed into place; the manifest is written last, to a temporary name,
fsynced and renamed. A backup exists if and only if its manifest does, so a process killed at any
moment leaves at most a hidden ``.tmp-*`` directory that no listing takes for a backup; the
writer holds a lock (:mod:`.locks`) while it exists, so the next backup or ``rotate`` can tell a
leftover of a dead writer from a backup being written, and removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from bmc_pipeline.engine.atomic import TMP_PREFIX, fsync_dir, write_atomic
from bmc_pipeline.engine.crypto import KeyRing, constant_time_equal, manifest_mac
from bmc_pipeline.engine.errors import BackupNotFoundError, BmcError, IntegrityError
from bmc_pipeline.engine.locks import LOCK_DIR, hold, is_held, lock_path
from bmc_pipeline.engine.manifest import Manifest

MANIFEST_VERSION = "1.0.0"
BACKUP_TYPES = ("full", "incremental", "rollback")
BACKUP_ID_RE = re.compile(
    r"^(?P<ts>\d{8}T\d{6}Z)-(?P<type>full|incremental|rollback)-(?P<rand>[0-9a-f]{6})$"
)
_MANIFEST_NAME_RE = re.compile(
    r"^backup_(?P<type>full|incremental|rollback)_(?P<ts>\d{8}T\d{6}Z)_(?P<rand>[0-9a-f]{6})\.json$"
)
_TS_FORMAT = "%Y%m%dT%H%M%SZ"


def new_backup_id(backup_type: str, now: datetime | None = None) -> str:
    """A unique, sortable id: UTC time to the second, the type, and 24 random bits."""
    if backup_type not in BACKUP_TYPES:
        raise ValueError(f"unknown backup type {backup_type!r}")
    now = now or datetime.now(timezone.utc)
    return (
        f"{now.astimezone(timezone.utc).strftime(_TS_FORMAT)}-{backup_type}-{secrets.token_hex(3)}"
    )


def check_backup_id(backup_id: str) -> re.Match[str]:
    """Refuse anything that is not a backup id, which also rules out path traversal."""
    m = BACKUP_ID_RE.match(backup_id)
    try:
        if m:
            datetime.strptime(m.group("ts"), _TS_FORMAT)
    except ValueError:
        m = None  # the shape of an id, but a time that never was
    if not m:
        raise BackupNotFoundError(
            f"{backup_id!r} is not a backup id (like 20261125T020000Z-full-3f9a2c); "
            "'bmc-backup list' shows the backups there are"
        )
    return m


def check_own_files(manifest: Manifest, ref: BackupRef, *, name: str) -> None:
    """Refuse a manifest that names archives outside its backup's own directory."""
    foreign = manifest.outside(ref.payload_dir.name)
    if foreign:
        raise IntegrityError(
            f"{name} names archive files outside {ref.payload_dir.name}/ ({', '.join(foreign[:3])}); "
            "it was edited or crafted: nothing was read",
            path=str(ref.manifest_path),
            reason="foreign-path",
        )


def backup_id_of_manifest(name: str) -> str | None:
    """The backup id a manifest file name stands for, or None if it is not a manifest's name."""
    m = _MANIFEST_NAME_RE.match(name)
    return f"{m.group('ts')}-{m.group('type')}-{m.group('rand')}" if m else None


def backup_time(backup_id: str) -> datetime:
    ts = check_backup_id(backup_id).group("ts")
    return datetime.strptime(ts, _TS_FORMAT).replace(tzinfo=timezone.utc)


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The bytes a manifest's MAC is computed over: sorted keys, no spaces, ASCII."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class BackupRef:
    """A published backup: its id and where its manifest and archives are."""

    backup_id: str
    backup_type: str
    timestamp: datetime
    manifest_path: Path
    payload_dir: Path


class BackupStore:
    """A local directory of backups (``storage.backup_dir``)."""

    def __init__(self, root: Path, *, dir_mode: int = 0o755, file_mode: int = 0o600) -> None:
        self.root = Path(root)
        self.dir_mode = dir_mode
        self.file_mode = file_mode

    # -- naming ---------------------------------------------------------------------------
    def ref(self, backup_id: str) -> BackupRef:
        m = check_backup_id(backup_id)
        ts, btype, rand = m.group("ts"), m.group("type"), m.group("rand")
        day = f"{ts[0:4]}-{ts[4:6]}-{ts[6:8]}"
        stem = f"backup_{btype}_{ts}_{rand}"
        return BackupRef(
            backup_id=backup_id,
            backup_type=btype,
            timestamp=backup_time(backup_id),
            manifest_path=self.root / day / f"{stem}.json",
            payload_dir=self.root / day / stem,
        )

    def mkdir(self, path: Path) -> None:
        """Create directories with the configured mode (umask would otherwise decide)."""
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            os.chmod(d, self.dir_mode)

    # -- finding --------------------------------------------------------------------------
    def iter_refs(self) -> Iterator[BackupRef]:
        """Every published backup (a manifest present), oldest first, read from names only."""
        if not self.root.is_dir():
            return
        for day_dir in sorted(self.root.iterdir()):
            if not day_dir.is_dir() or day_dir.name.startswith("."):
                continue
            for f in sorted(day_dir.iterdir()):
                bid = backup_id_of_manifest(f.name)
                if bid and f.is_file():
                    yield self.ref(bid)

    def refs(
        self,
        *,
        backup_type: str | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> list[BackupRef]:
        out = []
        for r in self.iter_refs():
            d = r.timestamp.date()
            if backup_type and r.backup_type != backup_type:
                continue
            if (date_from and d < date_from) or (date_to and d > date_to):
                continue
            out.append(r)
        return sorted(out, key=lambda r: r.backup_id)

    def describe(self, ref: BackupRef, keyring: KeyRing | None) -> dict[str, Any]:
        """A backup's row in a listing: id, type, time, path, documents per collection, size.

        Without a key the manifest is read unauthenticated (``authenticated`` says which); a
        manifest that cannot be read gives a row with ``error`` instead of stopping the listing.
        """
        row: dict[str, Any] = {
            "backup_id": ref.backup_id,
            "type": ref.backup_type,
            "timestamp": ref.timestamp.isoformat(),
            "path": str(ref.manifest_path),
        }
        try:
            m = self.load_manifest(ref, keyring)
            row["collections"] = {n: c.documents.documents for n, c in m.collections.items()}
            row["files"] = len(m.filesystem.get("files", {}))
            row["size_bytes"] = m.stored_bytes()
            row["authenticated"] = keyring is not None
        except (BmcError, KeyError, TypeError, AttributeError) as exc:
            row["error"] = str(exc)
        return row

    def resolve(self, backup_id: str) -> BackupRef:
        """The published backup with this id, or a clear error."""
        if backup_id == "latest":
            refs = [r for r in self.refs() if r.backup_type != "rollback"]
            if not refs:
                raise BackupNotFoundError(f"there are no backups in {self.root} yet")
            return refs[-1]
        ref = self.ref(backup_id)
        if not ref.manifest_path.is_file():
            raise BackupNotFoundError(
                f"backup {backup_id} not found in {self.root} (no manifest "
                f"{ref.manifest_path.name}); 'bmc-backup list' shows the backups there are"
            )
        return ref

    def latest_with(self, collection: str, keyring: KeyRing) -> tuple[BackupRef, Manifest] | None:
        """The newest backup (full or incremental, not rollback) that holds ``collection``."""
        for ref in reversed(self.refs()):
            if ref.backup_type == "rollback":
                continue
            manifest = self.load_manifest(ref, keyring)
            if collection in manifest.collections:
                return ref, manifest
        return None

    # -- manifests ------------------------------------------------------------------------
    def load_manifest(self, ref: BackupRef, keyring: KeyRing | None) -> Manifest:
        """Read a manifest; with a key ring, refuse one whose MAC does not verify."""
        name = f"backup {ref.backup_id}: manifest {ref.manifest_path.name}"
        try:
            text = ref.manifest_path.read_bytes()
        except OSError as exc:
            raise IntegrityError(
                f"{name} cannot be read: {exc.strerror}", path=str(ref.manifest_path)
            ) from None
        try:
            doc = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(
                f"{name} is not valid JSON ({exc}); it is corrupt",
                path=str(ref.manifest_path),
                reason="manifest-json",
            ) from None
        if not isinstance(doc, dict) or "backup_metadata" not in doc:
            raise IntegrityError(
                f"{name} is not a backup manifest",
                path=str(ref.manifest_path),
                reason="manifest-shape",
            )
        if keyring is not None:
            self.verify_manifest(doc, keyring, name=name)
        manifest = Manifest.parse(doc, name=name, path=str(ref.manifest_path))
        check_own_files(manifest, ref, name=name)
        if manifest.backup_metadata.backup_id != ref.backup_id:
            raise IntegrityError(
                f"{name} describes backup {manifest.backup_metadata.backup_id!r}; "
                "the file was renamed or copied",
                path=str(ref.manifest_path),
                reason="manifest-id",
            )
        return manifest

    @staticmethod
    def verify_manifest(doc: dict[str, Any], keyring: KeyRing, *, name: str) -> None:
        auth = doc.get("authentication")
        if not isinstance(auth, dict) or "mac" not in auth or "key_id" not in auth:
            raise IntegrityError(
                f"{name} carries no authentication block", reason="manifest-unauthenticated"
            )
        key = keyring.get(str(auth["key_id"]), what=name)
        body = {k: v for k, v in doc.items() if k != "authentication"}
        if not constant_time_equal(manifest_mac(key, canonical_json(body)), str(auth["mac"])):
            raise IntegrityError(
                f"{name} does not authenticate: it was edited after it was written, or is corrupt",
                reason="manifest-mac",
            )

    # -- writing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def pending(self, backup_id: str) -> Iterator[PendingBackup]:
        """A backup being written; published by ``publish``, removed if anything raises."""
        ref = self.ref(backup_id)
        if ref.manifest_path.exists() or ref.payload_dir.exists():
            raise FileExistsError(f"backup {backup_id} already exists")
        self.mkdir(ref.payload_dir.parent)
        tmp = ref.payload_dir.parent / f"{TMP_PREFIX}{backup_id}"
        # held while the directory exists: a leftover whose writer is gone is one nobody holds
        writer = lock_path(self.lock_root(), "backup", backup_id)
        with hold(writer, f"writing backup {backup_id}"):
            tmp.mkdir()
            os.chmod(tmp, self.dir_mode)
            pb = PendingBackup(self, ref, tmp)
            try:
                yield pb
            finally:
                pb.close_files(sync=False)
                if not pb.published:
                    shutil.rmtree(tmp, ignore_errors=True)
                # removed only once the directory is gone (published or deleted): whoever
                # opens the file afterwards finds no leftover of it to remove
                writer.unlink(missing_ok=True)

    def lock_root(self) -> Path:
        """The root whose ``.locks/`` the locks of this store live in, created with the store's
        directory mode (:mod:`.locks`)."""
        self.mkdir(self.root / LOCK_DIR)
        return self.root

    def write_file_atomic(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, mode=self.file_mode)

    def delete(self, ref: BackupRef) -> None:
        """Remove a backup: the manifest first, so a half-deleted backup is no longer listed."""
        ref.manifest_path.unlink(missing_ok=True)
        fsync_dir(ref.manifest_path.parent)
        shutil.rmtree(ref.payload_dir, ignore_errors=True)

    def leftovers(self) -> list[Path]:
        """Temporary directories of backups being written, or whose writer died (a kill, a crash,
        a full disk that also failed the clean-up)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for d in self.root.iterdir()
            if d.is_dir() and d.name != LOCK_DIR
            for p in d.glob(f"{TMP_PREFIX}*")
            if p.is_dir()
        )

    def stale_leftovers(self) -> list[Path]:
        """The :meth:`leftovers` no live process is writing: safe to remove at any time."""
        return [
            p
            for p in self.leftovers()
            if not is_held(lock_path(self.root, "backup", p.name.removeprefix(TMP_PREFIX)))
        ]

    def remove_stale_leftovers(self) -> list[Path]:
        """Remove what interrupted writes left (run by every backup and by ``rotate``)."""
        stale = self.stale_leftovers()
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        return stale


class PendingBackup:
    """Archives of one backup being written into a temporary directory."""

    def __init__(self, store: BackupStore, ref: BackupRef, tmp: Path) -> None:
        self.store = store
        self.ref = ref
        self.tmp = tmp
        self.published = False
        self._handles: dict[str, BinaryIO] = {}

    def relpath(self, filename: str) -> str:
        """How the manifest names a payload file: relative to the manifest's directory."""
        return f"{self.ref.payload_dir.name}/{filename}"

    def create(self, filename: str) -> BinaryIO:
        """A new payload file, created with the configured mode; closed and fsynced by publish."""
        if "/" in filename or filename.startswith("."):
            raise ValueError(f"bad payload file name {filename!r}")
        path = self.tmp / filename
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.store.file_mode)
        os.chmod(path, self.store.file_mode)
        fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self._handles[filename] = fh
        return fh

    def discard(self, filenames: list[str]) -> None:
        """Drop files written so far (a collection's archives, before a retry)."""
        for name in filenames:
            fh = self._handles.pop(name, None)
            if fh is not None:
                fh.close()
            (self.tmp / name).unlink(missing_ok=True)

    def close_files(self, *, sync: bool) -> None:
        for fh in self._handles.values():
            if not fh.closed:
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
                fh.close()

    def publish(self, manifest: Manifest, keyring: KeyRing) -> BackupRef:
        """Authenticate the manifest, move the archives into place, then write the manifest."""
        body = manifest.as_dict()
        key = keyring.primary
        signed = dict(body)
        signed["authentication"] = {
            "algorithm": "HMAC-SHA256",
            "key_id": key.key_id,
            "mac": manifest_mac(key, canonical_json(body)),
        }
        self.close_files(sync=True)
        fsync_dir(self.tmp)
        self.tmp.rename(self.ref.payload_dir)
        self.published = True
        try:
            self.store.write_file_atomic(
                self.ref.manifest_path,
                (json.dumps(signed, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode(),
            )
        except BaseException:
            shutil.rmtree(self.ref.payload_dir, ignore_errors=True)
            raise
        return self.ref
