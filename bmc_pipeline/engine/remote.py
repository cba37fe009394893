"""A second copy of the backup store at an fsspec URL: S3, GCS, Azure, SFTP, a mounted NAS.

Backups are always written to the local ``storage.backup_dir`` first, where publication is atomic
(temporary directory, fsync, rename, manifest last) — object stores have no atomic rename of a
directory, so that is where a backup is born. Once published and validated, :meth:`RemoteStore.push`
uploads it in the same order that makes publication safe: archives and file blobs first, the
manifest last, each manifest through a temporary name. A push that dies half-way leaves objects no
listing takes for a backup (there is no manifest), and the next push completes it.

:meth:`RemoteStore.pull` brings a backup back into the local store (after a lost disk, or on a
restore machine): it authenticates the remote manifest with the key before downloading anything,
downloads the payload, writes the manifest last, and the caller validates the result.

The remote tree mirrors the local one (``YYYY-MM-DD/backup_<type>_<time>_<id>.json``, its payload
directory, ``blobs/``), so ``aws s3 sync`` in either direction also works by hand. Credentials come
the way each fsspec backend reads them (e.g. ``AWS_*`` variables for ``s3://``), plus
``storage.remote_options``.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec

from bmc_pipeline.engine.atomic import atomic_write
from bmc_pipeline.engine.capture.segments import CAPTURE_DIR, CaptureStore, is_segment_name
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import (
    BackupNotFoundError,
    BmcError,
    GuardedError,
    IntegrityError,
    RemoteError,
)
from bmc_pipeline.engine.files import BLOB_DIR
from bmc_pipeline.engine.manifest import Manifest, plain_relative
from bmc_pipeline.engine.store import (
    BackupRef,
    BackupStore,
    backup_id_of_manifest,
    check_own_files,
)

CHUNK = 1 << 20  # bytes copied at a time when fetching a file
# object stores write an object whole or not at all: no temporary name needed for the manifest
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


@dataclass
class PushResult:
    backup_id: str
    url: str
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    already_there: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def remote_store(
    url: str | None, options: dict[str, Any], lock_days: int | None, lock_mode: str
) -> RemoteStore | None:
    """The remote copy ``storage.remote_url`` names, or None where none is configured."""
    if not url:
        return None
    return RemoteStore(url, options, lock_days=lock_days, lock_mode=lock_mode)


def require_remote(remote: RemoteStore | None) -> RemoteStore:
    """The configured remote store, or a refusal that says how to configure one."""
    if remote is None:
        raise BmcError(
            "no remote copy is configured: set storage.remote_url in backup_config.json "
            "(or BMC_REMOTE_URL), e.g. s3://bucket/bmc-backups or file:///mnt/nas/bmc"
        )
    return remote


class RemoteStore:
    """The remote copy of one deployment's backups."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        lock_days: int | None = None,
        lock_mode: str = "GOVERNANCE",
    ) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **(options or {}))
        except (ImportError, ValueError) as exc:
            raise RemoteError(
                f"storage.remote_url {url!r} cannot be used: {exc} (for s3:// install s3fs, for "
                "gs:// gcsfs, for az:// adlfs)"
            ) from None
        self.root = str(root).rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.object_store = bool(OBJECT_STORES & set(protocols))
        self.s3 = bool({"s3", "s3a"} & set(protocols))
        if lock_days and not self.s3:
            raise RemoteError(
                f"storage.remote_object_lock_days needs an s3:// remote (S3 Object Lock); "
                f"{self.url} is not one"
            )
        self.lock_days, self.lock_mode = lock_days, lock_mode

    def _remote(self, store: BackupStore, local: Path) -> str:
        return f"{self.root}/{local.relative_to(store.root).as_posix()}"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise RemoteError(f"{what} at {self.url} failed: {exc}") from exc

    # -- listing ---------------------------------------------------------------------------------
    def backup_ids(self) -> list[str]:
        """Backups the remote holds (those whose manifest is there), oldest first."""
        names = self._glob(f"{self.root}/*/backup_*.json", "listing")
        ids = (backup_id_of_manifest(n.rsplit("/", 1)[-1]) for n in names)
        return sorted(i for i in ids if i)

    def _glob(self, pattern: str, what: str) -> list[str]:
        """Remote paths matching ``pattern``; none where the directory does not exist yet."""
        try:
            return [str(n) for n in self.fs.glob(pattern)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RemoteError(f"{what} {self.url} failed: {exc}") from exc

    # -- upload ----------------------------------------------------------------------------------
    def push(
        self,
        store: BackupStore,
        ref: BackupRef,
        keyring: KeyRing,
        *,
        log: Callable[[str], None] = lambda _: None,
    ) -> PushResult:
        """Upload one published backup (payload and blobs first, manifest last) and check sizes."""
        manifest = store.load_manifest(ref, keyring)  # only authenticated backups leave the host
        result = PushResult(ref.backup_id, self.url)
        locals_: list[Path] = sorted(p for p in ref.payload_dir.rglob("*") if p.is_file())
        blob_root = store.root / BLOB_DIR
        locals_ += [blob_root / b[:2] / b for b in manifest.blobs()]
        for path in locals_:
            self._upload(store, path, result)
        self._upload(store, ref.manifest_path, result, via_temporary=True)
        log(
            f"backup {ref.backup_id} copied to {self.url}: {result.uploaded_files} file(s), "
            f"{result.uploaded_bytes} bytes ({result.already_there} already there)"
        )
        return result

    def _upload(
        self,
        store: BackupStore,
        path: Path,
        result: PushResult,
        *,
        via_temporary: bool = False,
        replace: bool = False,
    ) -> None:
        if not path.is_file():
            raise BackupNotFoundError(f"{path.name} is missing from the local backup; validate it")
        size = path.stat().st_size
        dest = self._remote(store, path)
        try:
            if not replace and self.fs.size(dest) == size:
                result.already_there += 1
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RemoteError(f"checking {dest} at {self.url} failed: {exc}") from exc
        parent = dest.rsplit("/", 1)[0]
        self._call("creating a directory", self.fs.makedirs, parent, True)
        via_temporary = via_temporary and not self.object_store
        target = f"{parent}/.{path.name}.{secrets.token_hex(4)}.part" if via_temporary else dest
        lock = self._lock_arguments()
        self._call(f"uploading {path.name}", self.fs.put_file, str(path), target, **lock)
        if via_temporary:
            self._call(f"publishing {path.name}", self.fs.mv, target, dest)
        remote_size = self._call(f"checking {path.name}", self.fs.size, dest)
        if remote_size != size:
            raise RemoteError(
                f"{path.name} is {remote_size} bytes at {self.url} after upload, {size} here"
            )
        result.uploaded_files += 1
        result.uploaded_bytes += size

    # -- continuous capture ----------------------------------------------------------------------
    def push_capture(
        self, store: BackupStore, keyring: KeyRing, *, log: Callable[[str], None] = lambda _: None
    ) -> dict[str, Any]:
        """Copy the capture segments the remote lacks (payload first, manifest last), then the
        position: a lost disk then loses only what was captured since the last copy."""
        capture = CaptureStore(store, keyring)
        result = PushResult("capture", self.url)
        there = {m.rsplit("/", 1)[-1][: -len(".json")] for m in self._segment_manifests()}
        pushed = 0
        for seg in capture.segments():
            if seg.name in there:
                continue
            capture.manifest(seg)  # only authenticated segments leave the host
            for path in sorted(p for p in seg.payload_dir.rglob("*") if p.is_file()):
                self._upload(store, path, result)
            self._upload(store, seg.manifest_path, result, via_temporary=True)
            pushed += 1
        if capture.position_path.is_file():
            capture.position()  # authenticated
            self._upload(store, capture.position_path, result, via_temporary=True, replace=True)
        if pushed:
            log(f"{pushed} capture segment(s) copied to {self.url}")
        return {"segments_pushed": pushed, "bytes": result.uploaded_bytes}

    def _segment_manifests(self) -> list[str]:
        return self._glob(f"{self.root}/{CAPTURE_DIR}/*/seg_*.json", "listing capture segments at")

    def pull_capture(self, store: BackupStore, keyring: KeyRing) -> dict[str, Any]:
        """Fetch the segments this store lacks (each manifest authenticated first, written last),
        and the position if there is none here."""
        capture = CaptureStore(store, keyring)
        here = {s.name for s in capture.segments()}
        remote_root = f"{self.root}/{CAPTURE_DIR}"
        pulled = 0
        for manifest in self._segment_manifests():
            name = manifest.rsplit("/", 1)[-1][: -len(".json")]
            rel = manifest[len(remote_root) + 1 :]
            if name in here or not is_segment_name(name) or not plain_relative(rel):
                continue  # ours already, or not a segment this store could have written
            raw = self._call(f"reading {name}", self.fs.cat_file, manifest)
            self._check_signed(raw, keyring, f"capture segment {name} at {self.url}")
            local = capture.root / rel
            for src in self._call(f"listing {name}", self.fs.find, manifest[: -len(".json")]):
                src_rel = str(src)[len(self.root) + 1 :]
                if not plain_relative(src_rel):
                    raise IntegrityError(f"capture segment {name} at {self.url} names {src_rel}")
                self._download(str(src), store.root / src_rel, store)
            store.mkdir(local.parent)
            store.write_file_atomic(local, raw)
            pulled += 1
        if not capture.position_path.exists():
            try:
                raw = self.fs.cat_file(f"{remote_root}/position.json")
            except FileNotFoundError:
                raw = None
            if raw is not None:
                self._check_signed(raw, keyring, f"the capture position at {self.url}")
                store.mkdir(capture.root)
                store.write_file_atomic(capture.position_path, raw)
        return {"segments_pulled": pulled}

    @staticmethod
    def _check_signed(raw: bytes, keyring: KeyRing, name: str) -> None:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"{name} is not JSON", reason="bad-manifest") from None
        BackupStore.verify_manifest(doc, keyring, name=name)

    def _download(self, src: str, dest: Path, store: BackupStore) -> None:
        if dest.is_file():
            return
        store.mkdir(dest.parent)
        try:
            with self.fs.open(src, "rb") as inp, atomic_write(dest, mode=store.file_mode) as out:
                shutil.copyfileobj(inp, out, CHUNK)
        except OSError as exc:
            raise RemoteError(f"downloading {src} failed: {exc}") from exc

    # -- download --------------------------------------------------------------------------------
    def pull(
        self,
        store: BackupStore,
        backup_id: str,
        keyring: KeyRing,
        *,
        log: Callable[[str], None] = lambda _: None,
    ) -> BackupRef:
        """Download a backup into the local store: the manifest is checked first, written last."""
        ref = store.ref(backup_id)
        remote_manifest = self._remote(store, ref.manifest_path)
        try:
            raw = self.fs.cat_file(remote_manifest)
        except FileNotFoundError:
            raise BackupNotFoundError(
                f"backup {backup_id} is not at {self.url} ('bmc-backup list --remote' shows what is)"
            ) from None
        except OSError as exc:
            raise RemoteError(f"reading the manifest of {backup_id} failed: {exc}") from exc
        try:
            doc = json.loads(raw)
        except ValueError:
            raise IntegrityError(
                f"the manifest of {backup_id} at {self.url} is not JSON", reason="bad-manifest"
            ) from None
        name = f"{self.url}/{ref.manifest_path.name}"
        store.verify_manifest(doc, keyring, name=name)
        manifest = Manifest.parse(doc, name=name)
        check_own_files(manifest, ref, name=name)
        remote_payload = self._remote(store, ref.payload_dir)
        try:
            payload = [str(p) for p in self.fs.find(remote_payload)]
        except FileNotFoundError:
            payload = []
        blob_root = store.root / BLOB_DIR
        wanted = [(p, store.root / p[len(self.root) + 1 :]) for p in payload]
        wanted += [
            (self._remote(store, blob_root / b[:2] / b), blob_root / b[:2] / b)
            for b in manifest.blobs()
        ]
        got = 0
        for src, dest in wanted:
            if dest.is_file():
                continue
            store.mkdir(dest.parent)
            try:
                with (
                    self.fs.open(src, "rb") as inp,
                    atomic_write(dest, mode=store.file_mode) as out,
                ):
                    shutil.copyfileobj(inp, out, CHUNK)
            except FileNotFoundError:
                raise IntegrityError(
                    f"backup {backup_id} at {self.url} lacks {src.rsplit('/', 1)[-1]}",
                    reason="missing",
                ) from None
            except OSError as exc:
                raise RemoteError(f"downloading {src} failed: {exc}") from exc
            got += 1
        store.mkdir(ref.manifest_path.parent)
        store.write_file_atomic(ref.manifest_path, raw)
        log(f"backup {backup_id} fetched from {self.url}: {got} file(s) downloaded")
        return ref

    # -- immutability ----------------------------------------------------------------------------
    def _lock_arguments(self) -> dict[str, Any]:
        """S3 Object Lock for a new object: nobody (the API, the CLI, stolen credentials) can
        delete it, or overwrite the version, before ``storage.remote_object_lock_days``."""
        if not self.lock_days:
            return {}
        until = datetime.now(timezone.utc) + timedelta(days=self.lock_days)
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": until}

    def locked_until(self, remote_path: str) -> datetime | None:
        """When the Object Lock retention of an object ends, if it has not yet."""
        if not self.s3:
            return None
        bucket, key, _ = self.fs.split_path(remote_path)
        try:  # HEAD carries the lock's headers (for a caller allowed to read the retention)
            answer = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except (OSError, ValueError):  # no such object
            return None
        until = answer.get("ObjectLockRetainUntilDate")
        if isinstance(until, datetime) and until > datetime.now(timezone.utc):
            return until
        return None

    def backup_locked_until(self, store: BackupStore, backup_id: str) -> datetime | None:
        return self.locked_until(self._remote(store, store.ref(backup_id).manifest_path))

    # -- deletion --------------------------------------------------------------------------------
    def delete(self, store: BackupStore, backup_id: str) -> None:
        """Remove a backup's remote copy, the manifest first (as locally); refused while the
        copy is under Object Lock (:class:`GuardedError`, naming until when)."""
        until = self.backup_locked_until(store, backup_id)
        if until is not None:
            raise GuardedError(
                f"backup {backup_id} is locked at {self.url} until {until.isoformat()} (S3 Object "
                f"Lock, {self.lock_mode.lower()} mode): it cannot be deleted before then"
            )
        ref = store.ref(backup_id)
        for path, recursive in ((ref.manifest_path, False), (ref.payload_dir, True)):
            try:
                self.fs.rm(self._remote(store, path), recursive=recursive)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RemoteError(f"deleting {backup_id} at {self.url} failed: {exc}") from exc

    def delete_blobs(self, store: BackupStore, blobs: list[str]) -> int:
        """Delete these blobs' remote copies, except those still under Object Lock."""
        n = 0
        for b in blobs:
            path = self._remote(store, store.root / BLOB_DIR / b[:2] / b)
            if self.locked_until(path) is not None:
                continue
            try:
                self.fs.rm(path)
                n += 1
            except FileNotFoundError:
                pass
        return n
