"""What a restore did (or, in a dry run, would do): counts, samples, verification, timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bmc_pipeline.engine.rawbson import decode_id

if TYPE_CHECKING:
    from bmc_pipeline.engine.restore.files import FilesRestoreReport


@dataclass
class RestoreReport:
    """What a restore did (or, dry run, would do)."""

    backup_id: str
    collection: str
    target_collection: str
    strategy: str
    dry_run: bool
    chain: list[str] = field(default_factory=list)
    inserted: int = 0
    overwritten: int = 0
    merged: int = 0
    skipped: int = 0
    unchanged: int = 0
    invalid: int = 0
    deleted: int = 0
    filtered_out: int = 0
    read: int = 0  # documents of the source: each ends up counted exactly once above
    generated_ids: int = 0  # legacy files: documents given an id derived from their content
    duplicates: int = 0  # legacy files and scans: a second copy of an id (counted as skipped)
    errors: list[str] = field(default_factory=list)
    rollback_id: str | None = None
    verified: bool = False
    verification: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    samples: dict[str, list[str]] = field(default_factory=dict)
    quarantine_file: str | None = None  # encrypted; 'bmc-backup quarantine show ID' reads it
    quarantine_id: str | None = None
    phases_s: dict[str, float] = field(default_factory=dict)  # verify, plan, rollback, write, check
    indexes_created: list[str] = field(default_factory=list)
    index_errors: list[str] = field(default_factory=list)
    # a restore to a point in time between backups: {"to", "base", "since"} (captured changes
    # from "since" to "to" replayed over backup point "base"); None otherwise
    replay: dict[str, str] | None = None

    @property
    def restored(self) -> int:
        return self.inserted + self.overwritten + self.merged

    def unaccounted(self) -> int:
        """Documents read but counted nowhere: 0, or the restore has a bug (checked before writing)."""
        return self.read - (self.restored + self.skipped + self.invalid + self.filtered_out)

    def sample(self, action: str, elem: bytes) -> None:
        ids = self.samples.setdefault(action, [])
        if len(ids) < 5:
            ids.append(str(decode_id(elem)))

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["restored"] = self.restored
        d["docs_per_s"] = round(self.restored / self.duration_s, 1) if self.duration_s > 0 else 0.0
        d["duration_s"] = round(self.duration_s, 3)
        d["phases_s"] = {k: round(v, 3) for k, v in self.phases_s.items()}
        return d

    def phase(self, name: str, since: float) -> float:
        """Record the time since ``since`` as phase ``name``; returns now."""
        now = time.monotonic()
        self.phases_s[name] = self.phases_s.get(name, 0.0) + now - since
        return now


@dataclass
class PointRestoreReport:
    """A restore of several collections (and the files) at one point, under one rollback point."""

    backup_id: str
    dry_run: bool
    collections: dict[str, RestoreReport]
    files: FilesRestoreReport | None = None
    rollback_id: str | None = None
    duration_s: float = 0.0

    @property
    def verified(self) -> bool:
        parts = [r.verified for r in self.collections.values()]
        if self.files is not None:
            parts.append(self.files.verified)
        return bool(parts) and all(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "dry_run": self.dry_run,
            "rollback_id": self.rollback_id,
            "verified": self.verified,
            "collections": {n: r.as_dict() for n, r in self.collections.items()},
            "files": self.files.as_dict() if self.files else None,
            "restored": sum(r.restored for r in self.collections.values()),
            "duration_s": round(self.duration_s, 3),
        }
