"""The ``merge`` restore strategy: combine a backup's version of a document with the current one.

Rules (docs/RESTORE.md repeats them, with examples):

1. A field present on only one side is kept.
2. Two sub-documents are merged field by field with these same rules.
3. Two arrays of sub-documents are unioned element by element. An element's identity is, in this
   order: the key ``merge_keys`` names for the field (e.g. ``messages`` by ``message_id``) when
   every element on both sides carries it; else the first of ``_id``, ``id``, ``message_id``,
   ``uuid`` that every element carries; else the whole element (equal elements are one). An
   element on one side only is kept; an element on both sides is merged by these rules. The
   result is in time order when every element has a ``timestamp`` date, else current elements
   first, then the backup's new ones.
4. Any other conflict (two different scalars, a scalar against a sub-document, arrays of scalars
   that differ) goes to the newer side, by the collection's timestamp field; when that is missing
   or equal on both sides, the current side wins.

Nothing present on either side is ever dropped, except a conflicting value replaced by rule 4.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

IDENTITY_KEYS = ("_id", "id", "message_id", "uuid")


def _newer_is_backup(current: dict[str, Any], backup: dict[str, Any], ts_field: str | None) -> bool:
    if not ts_field:
        return False
    c, b = current.get(ts_field), backup.get(ts_field)
    if isinstance(c, datetime) and isinstance(b, datetime):
        return b > c
    return False


def _is_documents(items: list[Any]) -> bool:
    return all(isinstance(i, dict) for i in items)


def identity_key(current: list[Any], backup: list[Any], configured: str | None) -> str | None:
    """The key that identifies elements of two arrays of sub-documents, or None (whole element)."""
    both = current + backup
    for key in (configured, *IDENTITY_KEYS):
        if key and all(key in i for i in both):
            return key
    return None


def _whole(item: Any) -> str:
    """A canonical text of an element, for identity by equality (key order does not matter)."""
    return json.dumps(item, sort_keys=True, default=repr)


def _merge_array(
    current: list[Any], backup: list[Any], configured: str | None, backup_wins: bool
) -> list[Any]:
    if not (_is_documents(current) and _is_documents(backup)) or not (current or backup):
        return backup if backup_wins and current != backup else current
    key = identity_key(current, backup, configured)

    def ident(item: dict[str, Any]) -> str:
        return repr(item[key]) if key else _whole(item)

    by_id: dict[str, Any] = {}
    order: list[str] = []
    for item in current:
        k = ident(item)
        if k not in by_id:
            order.append(k)
            by_id[k] = item
        else:  # the same identity twice on one side: merge them, so neither is lost
            by_id[k] = _merge_values(by_id[k], item, False, {})
    for item in backup:
        k = ident(item)
        if k in by_id:
            by_id[k] = _merge_values(by_id[k], item, backup_wins, {})
        else:
            order.append(k)
            by_id[k] = item
    merged = [by_id[k] for k in order]
    if all(isinstance(i.get("timestamp"), datetime) for i in merged):
        merged.sort(key=lambda i: i["timestamp"])
    return merged


def _merge_values(current: Any, backup: Any, backup_wins: bool, merge_keys: dict[str, str]) -> Any:
    if isinstance(current, dict) and isinstance(backup, dict):
        out = dict(current)
        for k, bv in backup.items():
            if k not in out:
                out[k] = bv
            elif isinstance(out[k], list) and isinstance(bv, list):
                out[k] = _merge_array(out[k], bv, merge_keys.get(k), backup_wins)
            else:
                out[k] = _merge_values(out[k], bv, backup_wins, {})
        return out
    if isinstance(current, list) and isinstance(backup, list):
        return _merge_array(current, backup, None, backup_wins)
    if current == backup:
        return current
    return backup if backup_wins else current


def merge_documents(
    current: dict[str, Any],
    backup: dict[str, Any],
    *,
    timestamp_field: str | None,
    merge_keys: dict[str, str],
) -> dict[str, Any]:
    """The merged document; ``_id`` is the current one's (they are equal by construction)."""
    backup_wins = _newer_is_backup(current, backup, timestamp_field)
    merged: dict[str, Any] = _merge_values(current, backup, backup_wins, merge_keys)
    merged["_id"] = current["_id"]
    return merged
