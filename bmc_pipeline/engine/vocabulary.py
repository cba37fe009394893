"""The words the whole project shares: restore strategies, scan sources, backup types.

Each is defined here once. The configuration model, the command line's choices, the Dagster
Launchpad's config and the API's models all use these enums, so a new strategy or source is added
in one place and every surface offers it.
"""

from __future__ import annotations

from enum import Enum


class Strategy(str, Enum):
    """How a restore treats a document that already exists in the target (docs/RESTORE.md)."""

    skip_duplicates = "skip_duplicates"
    overwrite = "overwrite"
    merge = "merge"
    timestamp_based = "timestamp_based"

    @property
    def summary(self) -> str:
        return _STRATEGY_SUMMARY[self]


_STRATEGY_SUMMARY = {
    Strategy.skip_duplicates: "keep what is there; only missing documents are inserted",
    Strategy.overwrite: "replace existing documents with the backup's version",
    Strategy.merge: "combine both versions field by field; arrays are unioned",
    Strategy.timestamp_based: "replace only where the backup's timestamp field is newer",
}


class Source(str, Enum):
    """Where the recovery scanner looks."""

    all = "all"
    mongodb = "mongodb"
    filesystem = "filesystem"


class BackupType(str, Enum):
    """The kinds of published backup point; ``rollback`` points are made by restores."""

    full = "full"
    incremental = "incremental"
    rollback = "rollback"

    @classmethod
    def scheduled(cls) -> tuple[BackupType, ...]:
        """The types a backup run makes (rollback points come from restores only)."""
        return tuple(cls(t.value) for t in ScheduledBackupType)


class ScheduledBackupType(str, Enum):
    """The types a backup run makes (what :meth:`BackupType.scheduled` gives), as a parameter
    offers them: an API schema that lists only these refuses ``rollback`` before route code runs."""

    full = BackupType.full.value
    incremental = BackupType.incremental.value


def choices(enum: type[Enum]) -> list[str]:
    """The values of an enum, in order: the choices a command line or form offers."""
    return [str(m.value) for m in enum]


__all__ = ["BackupType", "ScheduledBackupType", "Source", "Strategy", "choices"]
