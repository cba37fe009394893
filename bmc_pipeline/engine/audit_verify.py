"""``audit verify``: every line of every part of the audit log, checked against its chain.

What it finds, and names by file and line: an edited line (content and hash differ, or a MAC
that does not verify), a forged one (a MAC under a key that is not configured, or no MAC after
keyed lines), inserted or removed lines (sequence and ``prev`` links), a missing part of a rotated
log, and lines removed from the end (the head file). Parts removed from the *start* (old parts
deleted on purpose, to keep the log's size down) are a warning: the remaining chain is checked
from the first line still there.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmc_pipeline.engine.audit_chain import (
    GENESIS,
    entry_hash,
    head_payload,
    part_path,
    rotated_parts,
)
from bmc_pipeline.engine.crypto import KeyRing, audit_mac, constant_time_equal


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
    files: int = 0
    warnings: list[str] = field(default_factory=list)

    def fail(self, line: int, kind: str, message: str) -> None:
        self.ok, self.line, self.kind, self.message = False, line, kind, message

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "lines": self.lines,
            "files": self.files,
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


def verify_log(path: Path, head_path: Path, keyring: KeyRing | None) -> VerifyResult:
    """Check the log at ``path`` with its rotated parts and its head file."""
    return _Verifier(path, head_path, keyring).run()


class _Verifier:
    def __init__(self, path: Path, head_path: Path, keyring: KeyRing | None) -> None:
        self.path, self.head_path, self.keyring = path, head_path, keyring
        self.result = VerifyResult(path=str(path))

    def run(self) -> VerifyResult:
        result = self.result
        parts = rotated_parts(self.path)
        files = [p for _, p in parts] + ([self.path] if self.path.exists() else [])
        if not files:
            if self.head_path.exists():
                result.fail(0, "removed", "the log file is missing but its head file exists")
            return result
        for (n, p), (m, _) in itertools.pairwise(parts):
            if m != n + 1:
                gap = ", ".join(part_path(self.path, k).name for k in range(n + 1, m))
                result.fail(0, "removed", f"{gap} is missing: a part of the log between "
                            f"{p.name} and the next was removed")  # fmt: skip
                return result
        result.files = len(files)
        seq, prev = 1, GENESIS
        first = True
        for f in files:
            label = f.name if len(files) > 1 else ""
            with f.open("rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    result.lines += 1
                    if first:
                        first = False
                        seq, prev = self._start(raw, parts, seq, prev)
                    where = f"line {number} of {label}" if label else f"line {number}"
                    if self._check_line(raw, result.lines, where, seq, prev):
                        return result
                    entry = json.loads(raw)
                    seq, prev = int(entry["seq"]) + 1, str(entry["hash"])
        self._check_head(seq - 1, prev)
        return result

    def _start(
        self, raw: bytes, parts: list[tuple[int, Path]], seq: int, prev: str
    ) -> tuple[int, str]:
        """Where the chain starts: at entry 1, unless older parts were deleted on purpose."""
        if not parts or parts[0][0] == 1:
            return seq, prev
        try:
            entry = json.loads(raw)
            first_seq, first_prev = int(entry["seq"]), str(entry["prev"])
        except (ValueError, KeyError, TypeError):
            return seq, prev  # the line's own check names the damage
        self.result.warnings.append(
            f"parts before {parts[0][1].name} were removed (entries 1 to {first_seq - 1} are "
            "not checked); the chain is checked from there on"
        )
        return first_seq, first_prev

    def _check_line(self, raw: bytes, n: int, where: str, seq: int, prev: str) -> bool:
        result = self.result
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                raise ValueError("not an entry")
            stored = str(entry["hash"])
        except (ValueError, KeyError):
            result.fail(n, "edited", f"{where} is not a valid audit entry (edited or damaged)")
            return True
        if not constant_time_equal(entry_hash(entry), stored):
            result.fail(n, "edited", f"{where} was edited: its content does not match its hash")
            return True
        if entry.get("mac"):
            key_id = str(entry.get("key_id"))
            if self.keyring is None:
                result.unverifiable_macs += 1
            elif key_id not in self.keyring.key_ids:
                result.fail(
                    n,
                    "forged",
                    f"{where} carries a MAC under key {key_id}, which is not configured: it was "
                    "forged, or written with a key no longer in the key file (add it back to verify)",
                )
                return True
            elif not constant_time_equal(
                audit_mac(self.keyring.get(key_id), stored.encode()), str(entry["mac"])
            ):
                result.fail(
                    n, "forged", f"{where} was rewritten: its MAC does not verify with {key_id}"
                )
                return True
            else:
                result.macs_verified += 1
        elif self.keyring is not None and result.macs_verified:
            result.fail(
                n,
                "forged",
                f"{where} has no MAC although the lines before it have one: it was written "
                "without the key",
            )
            return True
        else:
            result.unkeyed += 1
        if entry["seq"] > seq:
            result.fail(
                n,
                "removed",
                f"{entry['seq'] - seq} line(s) were removed before {where} "
                f"(sequence jumps from {seq - 1} to {entry['seq']})",
            )
            return True
        if entry["seq"] < seq:
            result.fail(
                n,
                "inserted",
                f"{where} was inserted: its sequence number {entry['seq']} was already used",
            )
            return True
        if not constant_time_equal(str(entry.get("prev")), prev):
            result.fail(
                n,
                "inserted",
                f"{where} does not follow the line before it: a line there was replaced or "
                "inserted",
            )
            return True
        return False

    def _check_head(self, last_seq: int, last_hash: str) -> None:
        result, keyring, head_path = self.result, self.keyring, self.head_path
        keyed = keyring is not None and result.macs_verified > 0
        if not head_path.exists():
            if keyed:  # the writer signs the head with every keyed line: it cannot just be gone
                result.fail(
                    result.lines + 1,
                    "removed",
                    f"{head_path.name} is missing: lines may have been removed from the end "
                    "together with it",
                )
            elif last_seq:
                result.warnings.append(
                    f"{head_path.name} is missing: removal of lines at the end cannot be checked"
                )
            return
        try:
            head = json.loads(head_path.read_bytes())
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError, OSError):
            result.fail(result.lines, "edited", f"{head_path.name} is damaged")
            return
        signed = bool(head.get("mac") and keyring and head.get("key_id") in keyring.key_ids)
        if keyed and not signed:
            result.fail(
                result.lines,
                "forged",
                f"{head_path.name} is not signed with a configured key although the log is",
            )
            return
        if signed and keyring is not None:
            key = keyring.get(str(head["key_id"]))
            if not constant_time_equal(
                audit_mac(key, head_payload(head_seq, head_hash)), str(head["mac"])
            ):
                result.fail(result.lines, "forged", f"{head_path.name} was rewritten")
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
                f"{head_path.name} is behind the log (entry {head_seq} of {last_seq}); "
                "a writer may have stopped between the two writes"
            )
