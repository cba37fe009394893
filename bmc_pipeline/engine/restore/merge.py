"""The ``merge`` restore strategy: combine a backup's version of a document with the current one.

Rules (docs/RESTORE.md repeats them for users):

1. A field present on only one side is kept.
2. Two sub-documents are merged field by field with these same rules.
3. Two arrays named in the collection's ``merge_keys`` (e.g. ``messages`` by ``message_id``), or
   whose elements are all sub-documents carrying that key, are unioned by the key: an element on
   one side only is kept; an element on both sides is merged. The result is kept in time order when
   every element has a ``timestamp``, else current elements first, then the backup's new ones.
4. Any other conflict (two different scalars, arrays without a key) goes to the newer side, by the
   collection's timestamp field; when that is missing or equal on both sides, the current side wins.

Nothing present on either side is ever dropped, except a conflicting value replaced by rule 4.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _newer_is_backup(current: dict[str, Any], backup: dict[str, Any], ts_field: str | None) -> bool:
    if not ts_field:
        return False
    c, b = current.get(ts_field), backup.get(ts_field)
    if isinstance(c, datetime) and isinstance(b, datetime):
        return b > c
    return False


def _merge_array(current: list[Any], backup: list[Any], key: str, backup_wins: bool) -> list[Any]:
    def keyed(items: list[Any]) -> bool:
        return all(isinstance(i, dict) and key in i for i in items)

    if not (keyed(current) and keyed(backup)):
        return backup if backup_wins else current
    by_key: dict[Any, Any] = {}
    order: list[Any] = []
    for item in current:
        k = repr(item[key])
        if k not in by_key:
            order.append(k)
        by_key[k] = item
    for item in backup:
        k = repr(item[key])
        if k in by_key:
            by_key[k] = _merge_values(by_key[k], item, backup_wins, {})
        else:
            order.append(k)
            by_key[k] = item
    merged = [by_key[k] for k in order]
    if all(isinstance(i.get("timestamp"), datetime) for i in merged):
        merged.sort(key=lambda i: i["timestamp"])
    return merged


def _merge_values(current: Any, backup: Any, backup_wins: bool, merge_keys: dict[str, str]) -> Any:
    if isinstance(current, dict) and isinstance(backup, dict):
        out = dict(current)
        for k, bv in backup.items():
            if k not in out:
                out[k] = bv
            elif k in merge_keys and isinstance(out[k], list) and isinstance(bv, list):
                out[k] = _merge_array(out[k], bv, merge_keys[k], backup_wins)
            else:
                out[k] = _merge_values(out[k], bv, backup_wins, {})
        return out
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
