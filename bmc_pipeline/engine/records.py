"""Files of JSON lines the project keeps for people and for ``status``: the alert log and the
drill log. A line that does not parse (a write cut short by a crash) is skipped, not fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of the file, in order; none when the file does not exist."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
