"""The audit log: one JSON line per operation, in a hash chain that shows any edit.

Every operation through the HTTP API, the command line and the Dagster jobs appends one line: who
(``actor``), through what (``via``), what (``action`` and its ``params``, with anything that looks
like a secret removed), the ``outcome``, and how long it took. Each line carries

* ``seq``: 1, 2, 3, ... so a removed or repeated line shows as a gap or a repeat;
* ``prev``: the ``hash`` of the line before it (64 zeros for the first);
* ``hash``: SHA-256 of the line's canonical JSON without ``hash``/``key_id``/``mac``;
* ``mac``: HMAC-SHA256 of ``hash`` under a key derived from the backup key (``key_id`` names it),
  when a key is configured, so that someone who can write the file but has no key cannot rewrite
  the chain from some line onward and make it verify again.

A small ``<log>.head`` file records the last ``seq`` and ``hash`` (with its own MAC), so removing
lines from the end is detected too. Appends take an exclusive ``flock`` on the log, so the API
server, a command and a Dagster run writing at once still produce one unbroken chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.atomic import fsync_dir, write_atomic
from bmc_pipeline.engine.audit_chain import (
    GENESIS,
    canonical,
    entry_hash,
    head_payload,
    part_path,
    rotated_parts,
)
from bmc_pipeline.engine.audit_verify import VerifyResult, verify_log
from bmc_pipeline.engine.crypto import KeyRing, audit_mac
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import AuditWriteError, BmcError, KeyConfigError

_SECRET_NAME = re.compile(r"key|token|password|secret|authorization|webhook|cookie", re.I)
_MAX_VALUE_CHARS = 300
_MAX_KEYS = 30
_MAX_KEY_CHARS = 60
_TAIL_BYTES = 65_536
_lock = threading.Lock()
_log = logging.getLogger("bmc_pipeline.audit")


def current_user() -> str:
    """The operating-system user running this process (who ran a command)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with secret-looking keys replaced and long strings and lists shortened.

    Parameters are recorded to say *what* was asked, never to carry data: a key named like a
    secret becomes ``"<redacted>"`` whatever its value, and big values are cut.
    """
    if depth > 6:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        out_map = {
            str(k)[:_MAX_KEY_CHARS]: "<redacted>"
            if _SECRET_NAME.search(str(k))
            else scrub(v, depth + 1)
            for k, v in list(value.items())[:_MAX_KEYS]
        }
        if len(value) > _MAX_KEYS:
            out_map["<more keys>"] = len(value) - _MAX_KEYS
        return out_map
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        out = [scrub(v, depth + 1) for v in items[:20]]
        if len(items) > 20:
            out.append(f"<{len(items) - 20} more>")
        return out
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."


class AuditLog:
    """Appends entries to, and verifies, one audit log file."""

    def __init__(
        self,
        path: Path,
        keyring: KeyRing | None = None,
        *,
        file_mode: int = 0o600,
        rotate_bytes: int | None = None,
        rotate_days: float | None = None,
    ):
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self.keyring = keyring
        self.file_mode = file_mode
        self.rotate_bytes = rotate_bytes  # a part is closed at this size, or at this age
        self.rotate_days = rotate_days

    # -- writing ---------------------------------------------------------------------------------
    def append(
        self,
        *,
        actor: str,
        via: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        outcome: str = "ok",
        detail: str | None = None,
        duration_s: float = 0.0,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry, chained to the last line of the file; returns the entry written.

        Refused (:class:`KeyConfigError`) when the log is signed and no key is configured here:
        the line could not be signed, and would read as a forgery.
        """
        needed = self.signed_but_no_key()
        if needed is not None:
            raise KeyConfigError(
                f"not recorded in the audit log {self.path.name}: it is signed with key {needed} "
                "and no key is configured here (set BMC_BACKUP_KEY_FILE to record this too)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _lock:
            fd = self._open_current()
            try:
                seq, prev = self._last(fd)
                entry: dict[str, Any] = {
                    "seq": seq + 1,
                    "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "actor": actor,
                    "via": via,
                    "action": action,
                    "params": scrub(dict(params or {})),
                    "outcome": outcome,
                    "detail": scrub(detail) if detail else None,
                    "duration_ms": round(duration_s * 1000),
                    "prev": prev,
                }
                if extra:
                    entry["extra"] = scrub(dict(extra))
                entry["hash"] = entry_hash(entry)
                key = self.keyring.primary if self.keyring else None
                entry["key_id"] = key.key_id if key else None
                entry["mac"] = audit_mac(key, entry["hash"].encode()) if key else None
                os.write(fd, canonical(entry) + b"\n")
                os.fsync(fd)
                self._write_head(entry)
                if self._rotation_due(fd):
                    self._rotate()
            finally:
                os.close(fd)  # releases the flock
        return entry

    def _open_current(self) -> int:
        """The log file, open for appending and locked; the current one, should another writer
        have rotated it between this one's open and its lock."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, self.file_mode)
            os.fchmod(fd, self.file_mode)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if self.path.stat().st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass  # renamed away and not created again yet
            os.close(fd)

    def _rotation_due(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        if self.rotate_bytes and size >= self.rotate_bytes:
            return True
        if not self.rotate_days or size == 0:
            return False
        first = os.pread(fd, 4096, 0).split(b"\n", 1)[0]
        try:
            started = datetime.fromisoformat(json.loads(first)["time"])
        except (ValueError, KeyError, TypeError):
            return False
        return (datetime.now(timezone.utc) - started).total_seconds() > self.rotate_days * 86400

    def _rotate(self) -> None:
        """Move the current file to the next part (its lock is held): the chain goes on."""
        parts = rotated_parts(self.path)
        target = part_path(self.path, parts[-1][0] + 1 if parts else 1)
        self.path.rename(target)
        fsync_dir(self.path.parent)
        _log.info("audit log rotated to %s", target.name)

    def _last(self, fd: int) -> tuple[int, str]:
        """``seq`` and ``hash`` of the log's last line: of this file, or, when it is new, of the
        newest rotated part (0 and the genesis hash for a new log)."""
        size = os.fstat(fd).st_size
        if size == 0:
            parts = rotated_parts(self.path)
            if not parts:
                return 0, GENESIS
            part = os.open(parts[-1][1], os.O_RDONLY)
            try:
                if os.fstat(part).st_size:
                    return self._last(part)
            finally:
                os.close(part)
            return 0, GENESIS
        start = max(0, size - _TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        try:
            last = json.loads(lines[-1])
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            # The last line is damaged; chain to it anyway (verify will point at it) rather
            # than refuse to record what happens next.
            return size, hashlib.sha256(lines[-1]).hexdigest()

    def _write_head(self, entry: Mapping[str, Any]) -> None:
        key = self.keyring.primary if self.keyring else None
        head = {
            "seq": entry["seq"],
            "hash": entry["hash"],
            "key_id": key.key_id if key else None,
            "mac": audit_mac(key, head_payload(entry["seq"], entry["hash"])) if key else None,
        }
        write_atomic(self.head_path, canonical(head), mode=self.file_mode)

    def signed_but_no_key(self) -> str | None:
        """The key id a signed log needs when no key is configured here, else None.

        A line this process wrote could not be signed, and an unsigned line after signed ones is
        what a forgery looks like: such lines are not written (see :meth:`append`).
        """
        if self.keyring is not None or not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_bytes())
        except (OSError, ValueError):
            return None  # a damaged head is verify's to report
        if isinstance(head, dict) and head.get("mac"):
            return str(head.get("key_id"))
        return None

    @contextlib.contextmanager
    def operation(
        self,
        *,
        actor: str,
        via: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        changes: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Record the operation in the ``with`` body: its outcome, error and duration.

        The body may add to the yielded dict (``detail``, ``extra``) what it learnt, such as the
        backup id it made. An exception is recorded as ``error`` and re-raised.

        An operation that ``changes`` something first writes a ``started`` line, and does not
        run (:class:`AuditWriteError`) when that line cannot be written: a change the log cannot
        record is not made. (A signed log and no key here is only warned about: that line could
        never be written, and refusing would lock out the commands that set a key up.)
        """
        info: dict[str, Any] = {}
        started = time.monotonic()
        if changes:
            try:
                self.append(actor=actor, via=via, action=action, params=params, outcome="started")
            except KeyConfigError:
                pass  # said once, by the closing line's warning below
            except (OSError, BmcError) as exc:
                raise AuditWriteError(
                    f"not done: the audit log {self.path} cannot be written ({exc}); free space "
                    "or fix its permissions (audit.path in backup_config.json), then run it again"
                ) from exc
        failure: tuple[str, str] | None = None
        try:
            yield info
        except BaseException as exc:
            outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            failure = (outcome, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            problem = safe_append(
                self,
                actor=actor,
                via=via,
                action=action,
                params=params,
                outcome=failure[0] if failure else info.get("outcome", "ok"),
                detail=failure[1] if failure else info.get("detail"),
                duration_s=time.monotonic() - started,
                extra=info.get("extra"),
            )
            if problem:
                _log.warning(problem)

    # -- verifying -------------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check every line of every file; the result names the first problem (file, line, what)."""
        return verify_log(self.path, self.head_path, self.keyring)


def audit_log_for(settings: Settings, keyring: KeyRing | None = None) -> AuditLog:
    """The deployment's audit log, keyed when a backup key is configured."""
    if keyring is None:
        keyring = Deployment(settings).keyring_if_any()
    a = settings.audit
    return AuditLog(
        settings.path(a.path),
        keyring,
        file_mode=settings.storage.file_mode,
        rotate_bytes=a.rotate_bytes,
        rotate_days=a.rotate_days,
    )


def safe_append(log: AuditLog, **kwargs: Any) -> str | None:
    """Append, turning a failure into a message: auditing must not hide the operation's result."""
    try:
        log.append(**kwargs)
    except KeyConfigError as exc:  # a signed log and no key here: said as it is
        return str(exc)
    except (OSError, BmcError) as exc:
        return f"could not write the audit log {log.path.name}: {exc}"
    return None
