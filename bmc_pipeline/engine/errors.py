"""Exceptions at the engine boundary.

Every error a person can hit carries a message that names the thing involved (file, backup id,
collection) and what to do next. The command line maps each type to its own exit code so that
scripts can tell "corrupt backup" from "bad configuration" without parsing text.
"""

from __future__ import annotations


class BmcError(Exception):
    """Base of all errors the engine raises on purpose."""

    exit_code = 1


class ConfigError(BmcError):
    """``backup_config.json`` or an environment override is wrong."""

    exit_code = 2


class KeyConfigError(BmcError):
    """No usable encryption key: missing, unreadable, too open, or malformed."""

    exit_code = 3


class BackupNotFoundError(BmcError):
    """A backup id or path that names no published backup."""

    exit_code = 4


class IntegrityError(BmcError):
    """Stored bytes do not authenticate or do not match their checksums.

    ``path`` is the file that failed and ``reason`` a short machine-friendly phrase; the message
    is the whole sentence shown to a person.
    """

    exit_code = 5

    def __init__(self, message: str, *, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class DatabaseError(BmcError):
    """MongoDB could not be reached or refused an operation."""

    exit_code = 6


class DevServerError(BmcError):
    """The embedded MongoDB-compatible server could not be installed or started."""

    exit_code = 7


class GuardedError(BmcError):
    """An operation that a safety guard forbids, such as deleting a backup others depend on."""

    exit_code = 9


class RunFailedError(BmcError):
    """A Dagster run failed on purpose (``dagster.Failure``), e.g. a restore that did not verify."""

    exit_code = 8


class UnknownCollectionError(BmcError):
    """A collection that ``backup_config.json`` does not list, asked for by name."""

    exit_code = 2
