"""The audit log's chain, shared by its writer and its verifier: hashes, the head, the files.

A log is ``audit.log`` and, once rotated, its earlier parts ``audit.log.000001``,
``audit.log.000002``, ...: one chain across all of them (the first line of a part follows the
last line of the part before), so rotating never breaks it and a missing part shows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_PART = re.compile(r"^\.(\d{6})$")


def canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of a line: everything but the hash and MAC fields, canonically serialized."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "key_id", "mac")}
    return hashlib.sha256(canonical(body)).hexdigest()


def head_payload(seq: int, digest: str) -> bytes:
    return f"head:{seq}:{digest}".encode()


def part_path(path: Path, number: int) -> Path:
    """The name of the ``number``-th rotated part of the log at ``path``."""
    return path.with_name(f"{path.name}.{number:06d}")


def rotated_parts(path: Path) -> list[tuple[int, Path]]:
    """The rotated parts of the log at ``path``, oldest first, with their numbers."""
    if not path.parent.is_dir():
        return []
    parts = []
    for p in path.parent.iterdir():
        if p.name.startswith(path.name):
            m = _PART.match(p.name[len(path.name) :])
            if m and p.is_file():
                parts.append((int(m.group(1)), p))
    return sorted(parts)
