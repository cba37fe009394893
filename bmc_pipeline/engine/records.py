"""Files of JSON lines the project keeps for people and for ``status``: the alert log and the
drill log. A line that does not parse (a write cut short by a crash) is skipped, not fatal.

The alert log rotates by size: ``alerts.jsonl`` becomes ``alerts.jsonl.1`` (the older parts
shift to ``.2`` ... and the oldest past ``keep`` is removed), and readers read the kept parts
oldest first, so an alert opened before a rotation is still open after it.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

KEEP_PARTS = 5


def _parts(path: Path, keep: int = KEEP_PARTS) -> list[Path]:
    """The rotated parts of ``path`` that exist, oldest first."""
    return [p for n in range(keep, 0, -1) if (p := path.with_name(f"{path.name}.{n}")).exists()]


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of the file and its rotated parts, oldest first; none if there are none."""
    out = []
    for p in [*_parts(path), path]:
        if not p.exists():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def append_record(
    path: Path, record: dict[str, Any], *, rotate_bytes: int | None, keep: int = KEEP_PARTS
) -> None:
    """Append one JSON line; past ``rotate_bytes`` the file becomes part ``.1`` (under a lock, so
    two writers never rotate twice or write into a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with path.open("ab") as fh:
            fh.write(line)
            size = fh.tell()
        if rotate_bytes and size >= rotate_bytes:
            oldest = path.with_name(f"{path.name}.{keep}")
            oldest.unlink(missing_ok=True)
            for n in range(keep - 1, 0, -1):
                part = path.with_name(f"{path.name}.{n}")
                if part.exists():
                    part.replace(path.with_name(f"{path.name}.{n + 1}"))
            path.replace(path.with_name(f"{path.name}.1"))
