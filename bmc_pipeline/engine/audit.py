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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.crypto import KeyRing, audit_mac, constant_time_equal
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import AuditWriteError, BmcError, KeyConfigError

GENESIS = "0" * 64
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


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of a line: everything but the hash and MAC fields, canonically serialized."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "key_id", "mac")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _head_payload(seq: int, digest: str) -> bytes:
    return f"head:{seq}:{digest}".encode()


class AuditLog:
    """Appends entries to, and verifies, one audit log file."""

    def __init__(self, path: Path, keyring: KeyRing | None = None, *, file_mode: int = 0o600):
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self.keyring = keyring
        self.file_mode = file_mode

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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, self.file_mode)
            try:
                os.fchmod(fd, self.file_mode)
                fcntl.flock(fd, fcntl.LOCK_EX)
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
                os.write(fd, _canonical(entry) + b"\n")
                os.fsync(fd)
                self._write_head(entry)
            finally:
                os.close(fd)  # releases the flock
        return entry

    def _last(self, fd: int) -> tuple[int, str]:
        """``seq`` and ``hash`` of the file's last line (0 and the genesis hash if empty)."""
        size = os.fstat(fd).st_size
        if size == 0:
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
            "mac": audit_mac(key, _head_payload(entry["seq"], entry["hash"])) if key else None,
        }
        write_atomic(self.head_path, _canonical(head), mode=self.file_mode)

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
        """Check every line; the result names the first problem (line number and what it is)."""
        result = VerifyResult(path=str(self.path))
        if not self.path.exists():
            if self.head_path.exists():
                result.fail(0, "removed", "the log file is missing but its head file exists")
            return result
        expected_seq, prev_hash = 1, GENESIS
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                result.lines = number
                problem = self._check_line(raw, number, expected_seq, prev_hash, result)
                if problem:
                    return result
                entry = json.loads(raw)
                expected_seq, prev_hash = int(entry["seq"]) + 1, str(entry["hash"])
        self._check_head(expected_seq - 1, prev_hash, result)
        return result

    def _check_line(self, raw: bytes, n: int, seq: int, prev: str, result: VerifyResult) -> bool:
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                raise ValueError("not an entry")
            stored = str(entry["hash"])
        except (ValueError, KeyError):
            result.fail(n, "edited", f"line {n} is not a valid audit entry (edited or damaged)")
            return True
        if not constant_time_equal(entry_hash(entry), stored):
            result.fail(n, "edited", f"line {n} was edited: its content does not match its hash")
            return True
        if entry.get("mac"):
            key_id = str(entry.get("key_id"))
            if self.keyring is None:
                result.unverifiable_macs += 1
            elif key_id not in self.keyring.key_ids:
                result.fail(
                    n,
                    "forged",
                    f"line {n} carries a MAC under key {key_id}, which is not configured: it was "
                    "forged, or written with a key no longer in the key file (add it back to verify)",
                )
                return True
            elif not constant_time_equal(
                audit_mac(self.keyring.get(key_id), stored.encode()), str(entry["mac"])
            ):
                result.fail(
                    n, "forged", f"line {n} was rewritten: its MAC does not verify with {key_id}"
                )
                return True
            else:
                result.macs_verified += 1
        elif self.keyring is not None and result.macs_verified:
            result.fail(
                n,
                "forged",
                f"line {n} has no MAC although the lines before it have one: it was written "
                "without the key",
            )
            return True
        else:
            result.unkeyed += 1
        if entry["seq"] > seq:
            missing = entry["seq"] - seq
            result.fail(
                n,
                "removed",
                f"{missing} line(s) were removed before line {n} "
                f"(sequence jumps from {seq - 1} to {entry['seq']})",
            )
            return True
        if entry["seq"] < seq:
            result.fail(
                n,
                "inserted",
                f"line {n} was inserted: its sequence number {entry['seq']} was already used",
            )
            return True
        if not constant_time_equal(str(entry.get("prev")), prev):
            result.fail(
                n,
                "inserted",
                f"line {n} does not follow line {n - 1}: a line there was replaced or inserted",
            )
            return True
        return False

    def _check_head(self, last_seq: int, last_hash: str, result: VerifyResult) -> None:
        keyed = self.keyring is not None and result.macs_verified > 0
        if not self.head_path.exists():
            if keyed:  # the writer signs the head with every keyed line: it cannot just be gone
                result.fail(
                    result.lines + 1,
                    "removed",
                    f"{self.head_path.name} is missing: lines may have been removed from the end "
                    "together with it",
                )
            elif last_seq:
                result.warnings.append(
                    f"{self.head_path.name} is missing: removal of lines at the end "
                    "cannot be checked"
                )
            return
        try:
            head = json.loads(self.head_path.read_bytes())
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError, OSError):
            result.fail(result.lines, "edited", f"{self.head_path.name} is damaged")
            return
        if keyed and not (
            head.get("mac") and self.keyring and head.get("key_id") in self.keyring.key_ids
        ):
            result.fail(
                result.lines,
                "forged",
                f"{self.head_path.name} is not signed with a configured key although the log is",
            )
            return
        if head.get("mac") and self.keyring and head.get("key_id") in self.keyring.key_ids:
            key = self.keyring.get(str(head["key_id"]))
            if not constant_time_equal(
                audit_mac(key, _head_payload(head_seq, head_hash)), str(head["mac"])
            ):
                result.fail(result.lines, "forged", f"{self.head_path.name} was rewritten")
                return
        if head_seq > last_seq:
            result.fail(
                result.lines + 1,
                "removed",
                f"{head_seq - last_seq} line(s) were removed from the end: the log stops at "
                f"entry {last_seq} but entry {head_seq} was written",
            )
        elif head_seq == last_seq and not constant_time_equal(head_hash, last_hash):
            result.fail(result.lines, "edited", f"the last line (line {result.lines}) was replaced")
        elif head_seq < last_seq:
            result.warnings.append(
                f"{self.head_path.name} is behind the log (entry {head_seq} of {last_seq}); "
                "a writer may have stopped between the two writes"
            )


@dataclass
class VerifyResult:
    """What ``audit verify`` found: the first problem, if any, and how much was checked."""

    path: str
    lines: int = 0
    ok: bool = True
    line: int | None = None
    kind: str | None = None
    message: str | None = None
    macs_verified: int = 0
    unkeyed: int = 0
    unverifiable_macs: int = 0
    warnings: list[str] = field(default_factory=list)

    def fail(self, line: int, kind: str, message: str) -> None:
        self.ok, self.line, self.kind, self.message = False, line, kind, message

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "lines": self.lines,
            "first_problem": (
                {"line": self.line, "kind": self.kind, "message": self.message}
                if not self.ok
                else None
            ),
            "macs_verified": self.macs_verified,
            "unkeyed_lines": self.unkeyed,
            "unverifiable_macs": self.unverifiable_macs,
            "warnings": self.warnings,
        }


def audit_log_for(settings: Settings, keyring: KeyRing | None = None) -> AuditLog:
    """The deployment's audit log, keyed when a backup key is configured."""
    if keyring is None:
        keyring = Deployment(settings).keyring_if_any()
    return AuditLog(
        settings.path(settings.audit.path), keyring, file_mode=settings.storage.file_mode
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
