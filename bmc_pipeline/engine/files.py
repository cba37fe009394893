"""Snapshots of the chatbot's files in a content-addressed, encrypted blob store.

Every file's content is stored once, as an archive under ``<backup_dir>/blobs/``, named by a keyed
hash of the content (HMAC-SHA256 with a key derived from the backup key, so a blob name does not let
anyone confirm a guess of a secret file such as ``.env``). A snapshot is the list of (path, size,
mode, blob) that a manifest's ``filesystem`` section holds: an unchanged file costs no new bytes.
Files are streamed in 1 MiB chunks, so their size does not matter for memory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bson

from bmc_pipeline.engine.archive import ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.atomic import atomic_write
from bmc_pipeline.engine.crypto import KeyRing, blob_mac_key
from bmc_pipeline.engine.errors import IntegrityError
from bmc_pipeline.engine.manifest import BLOB_NAME
from bmc_pipeline.engine.store import BackupStore

CHUNK = 1 << 20
BLOB_DIR = "blobs"


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot, as the manifest records it."""

    path: str  # relative to the files root, '/'-separated
    size: int
    mode: int
    mtime: float
    blob: str
    stored_bytes: int


@dataclass
class FilesSnapshot:
    root: str
    files: list[FileEntry] = field(default_factory=list)
    new_blobs: int = 0
    new_bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def manifest_section(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "blob_dir": BLOB_DIR,
            "files": {
                f.path: {k: v for k, v in asdict(f).items() if k != "path"} for f in self.files
            },
        }


class BlobStore:
    """Encrypted file contents under ``<backup_dir>/blobs/<2 hex>/<blob id>``."""

    def __init__(
        self, store: BackupStore, keyring: KeyRing, *, level: int, segment_size: int
    ) -> None:
        self.store = store
        self.root = store.root / BLOB_DIR
        self.keyring = keyring
        self.level = level
        self.segment_size = segment_size

    def path(self, blob: str) -> Path:
        if not BLOB_NAME.fullmatch(blob):
            raise IntegrityError(f"{blob!r} is not a blob id")
        return self.root / blob[:2] / blob

    def blob_id(self, path: Path) -> str:
        mac = hmac.new(blob_mac_key(self.keyring.primary), digestmod=hashlib.sha256)
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                mac.update(chunk)
        return mac.hexdigest()

    def put(self, src: Path) -> tuple[str, int, bool]:
        """Store a file's content; returns (blob id, stored bytes, whether it was new)."""
        blob = self.blob_id(src)
        dest = self.path(blob)
        if dest.exists():
            return blob, dest.stat().st_size, False
        self.store.mkdir(dest.parent)
        with atomic_write(dest, mode=self.store.file_mode, sync_dir=False) as out:
            w = ArchiveWriter(
                out, self.keyring, level=self.level, segment_size=self.segment_size, name=blob
            )
            with src.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    w.write_batch(bson.encode({"d": bson.Binary(chunk)}))
            stats = w.close()
        return blob, stats.stored_bytes, True

    def holds(self, blob: str, path: Path) -> bool:
        """Whether the file at ``path`` has the content of ``blob`` (keyed hash, no decryption).

        The hash is keyed with the key that wrote the blob, so this holds across key rotation.
        """
        with self.path(blob).open("rb") as fh:
            key = self.keyring.get(
                ArchiveReader(fh, self.keyring, name=f"blob {blob}").header.key_id
            )
        mac = hmac.new(blob_mac_key(key), digestmod=hashlib.sha256)
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                mac.update(chunk)
        return hmac.compare_digest(mac.hexdigest(), blob)

    def read(self, blob: str) -> Iterator[bytes]:
        """A blob's content in chunks, authenticated, and checked against its id at the end."""
        p = self.path(blob)
        mac = None
        with p.open("rb") as fh:
            reader = ArchiveReader(fh, self.keyring, name=f"blob {blob}")
            mac = hmac.new(
                blob_mac_key(self.keyring.get(reader.header.key_id)), digestmod=hashlib.sha256
            )
            for doc in reader.documents():
                chunk = bytes(bson.decode(doc)["d"])
                mac.update(chunk)
                yield chunk
        if not hmac.compare_digest(mac.hexdigest(), blob):
            raise IntegrityError(
                f"blob {blob}: content does not match its id", path=str(p), reason="blob-id"
            )


def matching_files(root: Path, include: list[str], exclude: list[str]) -> list[Path]:
    """Files under ``root`` matching an include pattern and no exclude pattern, sorted."""
    found: set[Path] = set()
    for pattern in include:
        for p in root.glob(pattern):
            if p.is_file() and not p.is_symlink():
                found.add(p)
    out = []
    for p in sorted(found):
        rel = p.relative_to(root).as_posix()
        if not any(fnmatch.fnmatch(rel, x) for x in exclude):
            out.append(p)
    return out


def snapshot_files(
    root: Path, include: list[str], exclude: list[str], blobs: BlobStore
) -> FilesSnapshot:
    """Store every matching file's content (deduplicated) and return the snapshot listing."""
    snap = FilesSnapshot(root=str(root))
    if not root.is_dir():
        snap.skipped.append(f"{root}: files root does not exist")
        return snap
    for p in matching_files(root, include, exclude):
        try:
            st = p.stat()
            blob, stored, new = blobs.put(p)
        except OSError as exc:
            snap.skipped.append(f"{p}: {exc.strerror}")
            continue
        snap.files.append(
            FileEntry(
                path=p.relative_to(root).as_posix(),
                size=st.st_size,
                mode=st.st_mode & 0o7777,
                mtime=st.st_mtime,
                blob=blob,
                stored_bytes=stored,
            )
        )
        if new:
            snap.new_blobs += 1
            snap.new_bytes += stored
    return snap
