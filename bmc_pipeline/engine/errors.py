"""Exceptions at the engine boundary, with the exit code and HTTP status of each.

Every error a person can hit carries a message that names the thing involved (file, backup id,
collection) and what to do next. Each type has its own exit code, so that scripts can tell
"corrupt backup" from "bad configuration" without parsing text, and its own HTTP status for the
API. Both are declared here, once, on the class: the command line, the API and the code that turns
a failed Dagster run back into an error all read them from here.
"""

from __future__ import annotations

from typing import Any


class BmcError(Exception):
    """Base of all errors the engine raises on purpose."""

    exit_code = 1
    http_status = 400
    # set when the error ended a Dagster run: the run, and a report its step attached
    run_id: str | None = None
    report: dict[str, Any] | None = None


class ConfigError(BmcError):
    """``backup_config.json`` or an environment override is wrong."""

    exit_code = 2
    http_status = 422


class KeyConfigError(BmcError):
    """No usable encryption key: missing, unreadable, too open, or malformed."""

    exit_code = 3
    http_status = 503


class BackupNotFoundError(BmcError):
    """A backup id or path that names no published backup."""

    exit_code = 4
    http_status = 404


class IntegrityError(BmcError):
    """Stored bytes do not authenticate or do not match their checksums.

    ``path`` is the file that failed and ``reason`` a short machine-friendly phrase; the message
    is the whole sentence shown to a person.
    """

    exit_code = 5
    http_status = 422

    def __init__(self, message: str, *, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class DatabaseError(BmcError):
    """MongoDB could not be reached or refused an operation."""

    exit_code = 6
    http_status = 503


class RemoteError(BmcError):
    """The remote copy's store could not be reached or refused an operation."""

    exit_code = 6
    http_status = 502


class DevServerError(BmcError):
    """The embedded MongoDB-compatible server could not be installed or started."""

    exit_code = 7
    http_status = 503


class RunFailedError(BmcError):
    """A Dagster run failed on purpose (``dagster.Failure``), e.g. a restore that did not verify."""

    exit_code = 8
    http_status = 500


class PartialRestoreError(RunFailedError):
    """A restore stopped while writing; the message says whether it was rolled back.

    Rebuilt from a failed run's text (which is all that crosses the run's boundary), the two
    attributes are None: unknown, and the message says them.
    """

    def __init__(
        self, message: str, *, rollback_id: str | None = None, rolled_back: bool | None = None
    ) -> None:
        super().__init__(message)
        self.rollback_id = rollback_id
        self.rolled_back = rolled_back


class GuardedError(BmcError):
    """An operation that a safety guard forbids, such as deleting a backup others depend on."""

    exit_code = 9
    http_status = 409


class UnknownCollectionError(BmcError):
    """A collection that ``backup_config.json`` does not list, asked for by name."""

    exit_code = 2
    http_status = 404


class AuditWriteError(BmcError):
    """A change refused because the audit log could not record it (full disk, permissions)."""

    exit_code = 10
    http_status = 503


class UnstorableError(BmcError):
    """A recoverable conversation that BSON cannot hold; recovery stops before writing."""


# Exit codes that are outcomes rather than exceptions: a command that ran to its end and found
# something wrong reports it with the code of the error type that names that kind of problem.
EXIT_OK = 0
EXIT_INVALID = IntegrityError.exit_code  # validate/pull/audit verify found damage
EXIT_NOT_VERIFIED = RunFailedError.exit_code  # a restore/rollback wrote but did not verify
EXIT_CHECKS_FAILED = BmcError.exit_code  # doctor: some check failed
EXIT_INTERRUPTED = 130


def error_class(name: str) -> type[BmcError]:
    """The engine error class called ``name`` (a failed run names it as text), else BmcError."""
    found = _BY_NAME.get(name)
    return found if found is not None else BmcError


def _all_subclasses(cls: type[BmcError]) -> list[type[BmcError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_NAME = {c.__name__: c for c in _all_subclasses(BmcError)}
