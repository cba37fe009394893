"""What the audit log keeps of an HTTP request: a bounded summary, and tallies of refusals.

The audit log must say who asked for what, but it must not be a place where anyone who can reach
the port can write what they like: a line records the method, the path (cut), the status, the
body's size, its number of keys and the first few key names. The body itself is kept only for
requests made with a valid admin token, and only when, secrets removed, it is small (the
parameters of a restore are; a flood is not). Requests refused by the address budget are not
written one line each: they are counted per address and written as one line a minute
("N refused requests from A").
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from bmc_pipeline.engine.audit import scrub

MAX_PATH_CHARS = 200
FIRST_KEYS = 8
MAX_KEY_CHARS = 40
MAX_KEPT_BODY_BYTES = 2048
TALLY_WINDOW_S = 60.0

_INJECTION = re.compile(rb"\$(where|function|accumulator|expr|eval)\b", re.I)
_TRAVERSAL = re.compile(r"(^|/)\.\.(/|$)|%2e%2e|%2f|%5c|\\|//", re.I)


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters (and an ellipsis) when it is longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def summarize(raw_path: str, query: bytes, body: bytes, *, keep_body: bool) -> dict[str, Any]:
    """The ``params`` of a request's audit line: bounded whatever the request held."""
    pairs = parse_qsl(query.decode("latin-1"))
    params: dict[str, Any] = {"path": cut(raw_path, MAX_PATH_CHARS)}
    if pairs:
        params["query_names"] = [cut(k, MAX_KEY_CHARS) for k, _ in pairs[:FIRST_KEYS]]
        params["query_count"] = len(pairs)
    if not body:
        return params
    summary: dict[str, Any] = {"bytes": len(body)}
    try:
        parsed = json.loads(body)
    except ValueError:
        summary["json"] = False
        params["body"] = summary
        return params
    if isinstance(parsed, dict):
        summary["fields"] = len(parsed)
        summary["first_fields"] = [cut(str(k), MAX_KEY_CHARS) for k in list(parsed)[:FIRST_KEYS]]
    elif isinstance(parsed, list):
        summary["items"] = len(parsed)
    params["body"] = summary
    if keep_body:
        kept = scrub(parsed)
        if len(json.dumps(kept, default=str)) <= MAX_KEPT_BODY_BYTES:
            params["request"] = kept
    return params


def suspicions(path: str, raw_path: str, query: bytes, body: bytes) -> list[str]:
    """What the request looks like it tried: ``path traversal``, ``operator injection``."""
    values = [v for _, v in parse_qsl(query.decode("latin-1"))]
    if body:
        with contextlib.suppress(ValueError):
            values += list(_strings(json.loads(body)))
    found = []
    if _TRAVERSAL.search(raw_path) or _TRAVERSAL.search(path) or any(map(_looks_like_path, values)):
        found.append("path traversal")
    if _INJECTION.search(body) or _INJECTION.search(query):
        found.append("operator injection")
    return found


def _strings(value: Any, depth: int = 0) -> Any:
    """Every string in a parsed JSON body (bounded depth: bodies are small and limited)."""
    if depth > 20:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, depth + 1)


def _looks_like_path(value: str) -> bool:
    """A parameter that tries to name a file: ``..`` segments, or an absolute path."""
    parts = re.split(r"[/\\]", value)
    return (
        ".." in parts
        or value.startswith(("/", "~", "\\"))
        or bool(re.match(r"^[A-Za-z]:[/\\]", value))
    )


@dataclass
class _Tally:
    since: float
    count: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    suspicious: set[str] = field(default_factory=set)


class RefusalTally:
    """Requests refused by an address's budget, counted per address until written.

    :meth:`add` counts one; :meth:`due` hands back the tallies at least a window old (all of them
    with ``everything``, at shutdown), each to be written as one audit line.
    """

    def __init__(self, window_s: float = TALLY_WINDOW_S) -> None:
        self.window_s = window_s
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()

    def add(self, address: str, path: str, suspicious: list[str]) -> None:
        with self._lock:
            tally = self._tallies.setdefault(address, _Tally(since=time.monotonic()))
            tally.count += 1
            if path in tally.paths or len(tally.paths) < FIRST_KEYS:
                key = cut(path, MAX_PATH_CHARS)
                tally.paths[key] = tally.paths.get(key, 0) + 1
            tally.suspicious.update(suspicious)

    def due(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """The lines to write now: ``client``, ``count``, ``window_s``, ``paths``, ``suspicious``."""
        now = time.monotonic()
        out = []
        with self._lock:
            for address, tally in list(self._tallies.items()):
                if everything or now - tally.since >= self.window_s:
                    del self._tallies[address]
                    out.append(
                        {
                            "client": address,
                            "count": tally.count,
                            "window_s": round(now - tally.since, 1),
                            "paths": tally.paths,
                            "suspicious": sorted(tally.suspicious),
                        }
                    )
        return out
