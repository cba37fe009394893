"""Where continuous capture keeps what it captured: sealed segments and the resume position.

```
<backup_dir>/capture/
  position.json                                   where to resume, what is covered, gaps (MAC)
  YYYY-MM-DD/
    seg_<first>_<last>_<rand>.json                a segment's manifest, written last (MAC)
    seg_<first>_<last>_<rand>/<collection>.changes.bson.zst.enc
```

A segment is published like a backup: archives into a hidden temporary directory, fsynced,
renamed, then the manifest. The position is saved only after the segment holding the changes it
points past is published, so a crash repeats changes and never skips them. ``<first>`` and
``<last>`` are the times of the segment's first and last change (``YYYYMMDDTHHMMSS.mmmZ``).

The position records the **covered ranges**: a range ``[from, until]`` means every change with a
time in it is in a published segment. A break in capture that lost history (the oplog trimmed
past the resume point, a change stream that cannot resume) ends a range and records a **gap**.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.atomic import TMP_PREFIX, fsync_dir, write_atomic
from bmc_pipeline.engine.capture.changes import CapturedChange, parse_record
from bmc_pipeline.engine.crypto import KeyRing, manifest_mac
from bmc_pipeline.engine.errors import IntegrityError
from bmc_pipeline.engine.manifest import ArchiveEntry
from bmc_pipeline.engine.store import BackupStore, canonical_json
from bmc_pipeline.engine.validate import verify_archive

CAPTURE_DIR = "capture"
POSITION = "position.json"
_SEGMENT_RE = re.compile(
    r"^seg_(?P<first>\d{8}T\d{6}\.\d{3}Z)_(?P<last>\d{8}T\d{6}\.\d{3}Z)_(?P<rand>[0-9a-f]{6})$"
)
_TIME = "%Y%m%dT%H%M%S"


def is_segment_name(name: str) -> bool:
    return _SEGMENT_RE.match(name) is not None


def segment_time(at: datetime) -> str:
    at = at.astimezone(timezone.utc)
    return f"{at.strftime(_TIME)}.{at.microsecond // 1000:03d}Z"


def parse_segment_time(text: str) -> datetime:
    return datetime.strptime(text[:-5], _TIME).replace(
        microsecond=int(text[-4:-1]) * 1000, tzinfo=timezone.utc
    )


class CoveredRange(BaseModel):
    """Every change with a time in ``[start, until]`` is in a published segment."""

    start: datetime
    until: datetime


class Gap(BaseModel):
    """Changes after ``after`` and before ``before`` may be missing: history was lost."""

    after: datetime
    before: datetime
    detected: datetime
    reason: str
    alerted: bool = False


class Position(BaseModel):
    """Where capture resumes and what it covers (``position.json``, authenticated)."""

    model_config = ConfigDict(extra="allow")

    source: str  # oplog or change-stream
    database: str
    resume: dict[str, Any] = Field(default_factory=dict)  # {"ts": [t, i]} or {"token": {...}}
    ranges: list[CoveredRange] = Field(default_factory=list)
    gaps: list[Gap] = Field(default_factory=list)
    full_requested: datetime | None = None  # a gap asked for a new full backup
    segments: int = 0  # sealed so far
    changes: int = 0  # captured so far
    updated: datetime | None = None

    @property
    def recoverable_until(self) -> datetime | None:
        return self.ranges[-1].until if self.ranges else None

    def covering(self, start: datetime, end: datetime) -> CoveredRange | None:
        """The range holding every time from ``start`` to ``end``, if one does."""
        for r in self.ranges:
            if r.start <= start and end <= r.until:
                return r
        return None

    def describe_ranges(self) -> str:
        if not self.ranges:
            return "nothing has been captured yet"
        return ", ".join(f"{r.start.isoformat()} to {r.until.isoformat()}" for r in self.ranges)


@dataclass(frozen=True)
class SegmentRef:
    """A published segment, named by the times of its first and last change."""

    name: str
    first: datetime
    last: datetime
    manifest_path: Path

    @property
    def payload_dir(self) -> Path:
        return self.manifest_path.with_suffix("")


class CaptureStore:
    """The ``capture/`` directory of a backup store."""

    def __init__(self, store: BackupStore, keyring: KeyRing) -> None:
        self.store = store
        self.root = store.root / CAPTURE_DIR
        self.keyring = keyring

    # -- the position ---------------------------------------------------------------------
    @property
    def position_path(self) -> Path:
        return self.root / POSITION

    def position(self) -> Position | None:
        """The saved position, authenticated; None before capture first ran."""
        path = self.position_path
        if not path.exists():
            return None
        doc = self._read_signed(path, "the capture position")
        try:
            return Position.model_validate(doc)
        except ValidationError as exc:
            raise IntegrityError(
                f"the capture position {path} is not one this version reads: {exc.errors()[0]['msg']}",
                path=str(path),
            ) from None

    def save_position(self, position: Position) -> None:
        position.updated = datetime.now(timezone.utc)
        self.store.mkdir(self.root)
        self._write_signed(self.position_path, position.model_dump(mode="json"))

    # -- segments -------------------------------------------------------------------------
    def segments(self) -> list[SegmentRef]:
        """Every published segment, oldest first (a manifest present; names checked)."""
        found: list[SegmentRef] = []
        if not self.root.is_dir():
            return found
        for day in sorted(self.root.iterdir()):
            if not day.is_dir() or day.name.startswith("."):
                continue
            for f in day.iterdir():
                m = _SEGMENT_RE.match(f.stem) if f.suffix == ".json" else None
                if m and f.is_file():
                    found.append(
                        SegmentRef(
                            f.stem,
                            parse_segment_time(m["first"]),
                            parse_segment_time(m["last"]),
                            f,
                        )
                    )
        return sorted(found, key=lambda s: (s.first, s.last, s.name))

    def publish(
        self, changes: list[CapturedChange], *, sealed: datetime, **meta: Any
    ) -> SegmentRef:
        """Seal ``changes`` (in capture order, at least one) into a new segment."""
        first, last = min(c.at for c in changes), max(c.at for c in changes)
        name = f"seg_{segment_time(first)}_{segment_time(last)}_{secrets.token_hex(3)}"
        day = self.root / first.strftime("%Y-%m-%d")
        self.store.mkdir(day)
        tmp = day / f"{TMP_PREFIX}{name}"
        tmp.mkdir()
        os.chmod(tmp, self.store.dir_mode)
        try:
            per: dict[str, list[CapturedChange]] = {}
            for c in changes:
                per.setdefault(c.collection, []).append(c)
            collections: dict[str, Any] = {}
            for coll, items in per.items():
                filename = f"{coll}.changes{ARCHIVE_SUFFIX}"
                path = tmp / filename
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.store.file_mode)
                with os.fdopen(fd, "wb") as fh:
                    w = ArchiveWriter(fh, self.keyring, name=filename)
                    for c in items:
                        w.write_batch(c.record())
                    stats = w.close()
                    fh.flush()
                    os.fsync(fh.fileno())
                collections[coll] = {
                    "changes": len(items),
                    "first": min(c.at for c in items).isoformat(),
                    "last": max(c.at for c in items).isoformat(),
                    "archive": ArchiveEntry.of(f"{name}/{filename}", stats).model_dump(),
                }
            fsync_dir(tmp)
            tmp.rename(day / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        body = {
            "segment": {
                "name": name,
                "first": first.isoformat(),
                "last": last.isoformat(),
                "sealed": sealed.isoformat(),
                **meta,
            },
            "collections": collections,
        }
        path = day / f"{name}.json"
        self._write_signed(path, body)
        return SegmentRef(name, first, last, path)

    def manifest(self, ref: SegmentRef) -> dict[str, Any]:
        return self._read_signed(ref.manifest_path, f"capture segment {ref.name}")

    def changes(self, ref: SegmentRef, collection: str) -> list[CapturedChange]:
        """The changes of ``collection`` in one segment, in capture order (checked first)."""
        entry = self.manifest(ref)["collections"].get(collection)
        if entry is None:
            return []
        archive = ArchiveEntry.model_validate(entry["archive"])
        if archive.file.split("/")[0] != ref.name:
            raise IntegrityError(
                f"capture segment {ref.name} names an archive outside it: {archive.file}",
                path=str(ref.manifest_path),
            )
        path = ref.manifest_path.parent / archive.file
        label = f"capture segment {ref.name}: {archive.file}"
        verify_archive(path, archive, self.keyring, label)
        with path.open("rb") as fh:
            reader = ArchiveReader(fh, self.keyring, name=label, declared_raw=archive.raw_bytes)
            return [parse_record(collection, raw) for raw in reader.documents()]

    def remove(self, ref: SegmentRef) -> None:
        """Delete a segment: the manifest first, so a half-removed one is no segment at all."""
        ref.manifest_path.unlink(missing_ok=True)
        fsync_dir(ref.manifest_path.parent)
        shutil.rmtree(ref.payload_dir, ignore_errors=True)

    # -- signed JSON ----------------------------------------------------------------------
    def _write_signed(self, path: Path, body: dict[str, Any]) -> None:
        key = self.keyring.primary
        signed = dict(body)
        signed["authentication"] = {
            "algorithm": "HMAC-SHA256",
            "key_id": key.key_id,
            "mac": manifest_mac(key, canonical_json(body)),
        }
        data = (json.dumps(signed, indent=2, ensure_ascii=False) + "\n").encode()
        write_atomic(path, data, mode=self.store.file_mode)

    def _read_signed(self, path: Path, name: str) -> dict[str, Any]:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{name} ({path}) cannot be read: {exc}", path=str(path)) from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{name} ({path}) is not a JSON object", path=str(path))
        BackupStore.verify_manifest(doc, self.keyring, name=f"{name} ({path})")
        return {k: v for k, v in doc.items() if k != "authentication"}

    def segments_before(self, when: datetime) -> list[SegmentRef]:
        """Segments whose last change is before ``when``."""
        return [s for s in self.segments() if s.last < when]

    def iter_segments_between(self, start: datetime, end: datetime) -> Iterator[SegmentRef]:
        """Segments holding a change from ``start`` to ``end``, oldest first."""
        for s in self.segments():
            if s.last >= start and s.first <= end:
                yield s
