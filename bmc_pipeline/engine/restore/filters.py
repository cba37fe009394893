"""Which documents of a backup a restore brings back: the one parser of restore filters.

Every surface (command line, Launchpad, API, the Python API) builds a :class:`RestoreFilters`
through :meth:`RestoreFilters.from_dict` or its constructor; queries are checked against a
whitelist of operators and evaluated here, in Python, never sent to the server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bson
import bson.errors
from bson import json_util
from bson.codec_options import CodecOptions
from bson.regex import Regex
from mongomock.filtering import filter_applies

from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.rawbson import datetime_ms, string_value, top_level


@dataclass
class RestoreFilters:
    """Which documents of the backup to restore, and from which point."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    session_ids: list[str] | None = None
    point_in_time: datetime | None = None
    drop_deleted: bool = False  # like mongorestore --drop, but only for ids the chain deleted
    # A MongoDB query over the backed-up documents, with whitelisted operators only
    # (see check_query); evaluated here, in Python, never sent to the server.
    query: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.query is not None:
            self.query = check_query(self.query)

    @property
    def selective(self) -> bool:
        return bool(self.date_from or self.date_to or self.session_ids or self.query)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RestoreFilters:
        """The seed API's ``filters`` dict: ``date_range: {from, to}``, ``session_ids``, ..."""
        d = dict(d or {})
        dr = d.pop("date_range", None) or {}
        allowed = {
            "query",
            "session_ids",
            "point_in_time",
            "drop_deleted",
            "collection",
            "date_from",
            "date_to",
        }
        unknown = set(d) - allowed
        if unknown:
            raise BmcError(
                f"unknown restore filter(s) {', '.join(sorted(unknown))}: use date_range, "
                "session_ids, query, point_in_time, drop_deleted or collection"
            )
        sids = d.get("session_ids") or None  # an empty list filters nothing, like no list
        if sids is not None and (
            not isinstance(sids, list) or not all(isinstance(s, str) for s in sids)
        ):
            raise BmcError("filters.session_ids must be a list of strings")
        return cls(
            date_from=parse_time(dr.get("from") or d.get("date_from"), "date_range.from"),
            date_to=parse_time(dr.get("to") or d.get("date_to"), "date_range.to"),
            session_ids=sids,
            point_in_time=parse_time(d.get("point_in_time"), "point_in_time"),
            drop_deleted=bool(d.get("drop_deleted", False)),
            query=d.get("query"),
        )

    def as_config(self) -> dict[str, Any]:
        """These filters as ``restore_job``'s config fields (plain text: ISO times, the query as
        Extended JSON), which :meth:`from_dict` reads back to equal filters."""

        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "date_from": iso(self.date_from),
            "date_to": iso(self.date_to),
            "session_ids": self.session_ids or [],
            "point_in_time": iso(self.point_in_time),
            "drop_deleted": self.drop_deleted,
            "query": None if self.query is None else json_util.dumps(self.query),
        }

    def accepts(self, raw: bytes, timestamp_field: str | None) -> bool:
        """Whether a backed-up document (raw BSON) passes these filters."""
        if not self.selective:
            return True
        if self.query is not None and not matches(self.query, raw):
            return False
        fields = top_level(raw)
        if self.session_ids is not None:
            t, v = fields.get("session_id", (0, b""))
            if string_value(t, v) not in self.session_ids:
                return False
        if self.date_from or self.date_to:
            if not timestamp_field:
                raise BmcError(
                    "a date range needs the collection's timestamp_field in backup_config.json"
                )
            t, v = fields.get(timestamp_field, (0, b""))
            ms = datetime_ms(t, v)
            if ms is None:
                return False
            if self.date_from and ms < int(self.date_from.timestamp() * 1000):
                return False
            if self.date_to and ms > int(self.date_to.timestamp() * 1000):
                return False
        return True


# Query operators a restore filter may use: comparisons, sets, logic and element tests. Nothing
# that runs code ($where, $function, $accumulator) or reaches outside the document ($expr, $jsonSchema
# with its own semantics, $text, $near...) is accepted.
QUERY_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
        "$and", "$or", "$nor", "$not", "$exists", "$type", "$size", "$all", "$elemMatch",
        "$regex", "$options",
    }
)  # fmt: skip
_MAX_QUERY_DEPTH = 12


def check_query(query: Any) -> dict[str, Any]:
    """A restore filter query, with Extended JSON values decoded, or a clear refusal.

    Values may be written as Extended JSON (``{"$date": "2026-11-01T00:00:00Z"}``,
    ``{"$oid": "..."}``); every other ``$`` key must be a whitelisted operator.
    """
    if isinstance(query, str):
        text = query
    else:
        try:
            text = json.dumps(query)
        except (TypeError, ValueError):
            raise BmcError("filters.query must be a JSON object (a MongoDB query)") from None
    try:
        decoded = json_util.loads(text, json_options=_QUERY_JSON)
    except (ValueError, TypeError, bson.errors.BSONError) as exc:
        raise BmcError(f"filters.query is not valid (Extended) JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise BmcError("filters.query must be a JSON object (a MongoDB query)")

    def walk(node: Any, depth: int) -> None:
        if depth > _MAX_QUERY_DEPTH:
            raise BmcError(f"filters.query is nested deeper than {_MAX_QUERY_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise BmcError("filters.query keys must be strings")
                if k.startswith("$") and k not in QUERY_OPERATORS:
                    raise BmcError(
                        f"filters.query uses operator {k!r}, which a restore filter does not "
                        f"accept; allowed: {', '.join(sorted(QUERY_OPERATORS))}"
                    )
                walk(v, depth + 1)
        elif isinstance(node, list):
            for v in node:
                walk(v, depth + 1)

    walk(decoded, 0)
    checked: dict[str, Any] = _patterns(decoded)
    return checked


# dates in queries are compared with the documents' dates, which are read time-zone aware (UTC)
_QUERY_JSON = json_util.JSONOptions(tz_aware=True, tzinfo=timezone.utc)


def _patterns(node: Any) -> Any:
    """``{"$regex": ...}`` decodes as a BSON regex literal; the evaluator wants a compiled one."""
    if isinstance(node, Regex):
        try:
            return node.try_compile()
        except re.error as exc:
            raise BmcError(
                f"filters.query has a regular expression that does not compile: {exc}"
            ) from None
    if isinstance(node, dict):
        return {k: _patterns(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_patterns(v) for v in node]
    return node


_TZ_AWARE: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def matches(query: dict[str, Any], raw: bytes) -> bool:
    """Whether a backed-up document matches a (checked) restore query."""
    try:
        return bool(filter_applies(query, bson.decode(raw, codec_options=_TZ_AWARE)))  # type: ignore[no-untyped-call]
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise BmcError(f"filters.query cannot be evaluated: {exc}") from None


def parse_time(value: Any, what: str) -> datetime | None:
    """An ISO-8601 date or time (UTC if no zone is given)."""
    if value is None or isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or timezone.utc) if value else None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BmcError(
            f"{what}: {value!r} is not a date or time like 2026-11-25 or 2026-11-25T02:00:00Z"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
