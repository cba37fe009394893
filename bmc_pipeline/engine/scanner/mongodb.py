"""The MongoDB side of a scan: counts, date ranges, samples with personal data masked, and which
conversation keys the database already holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import bson
import bson.errors
from bson import json_util

from bmc_pipeline.engine.bsonstream import bson_documents
from bmc_pipeline.engine.mongo import raw_batches
from bmc_pipeline.engine.rawbson import BSON_REFUSES, decode_id, id_element, top_level
from bmc_pipeline.engine.scanner.form import conversation_key
from bmc_pipeline.engine.schema import invalid_reason

_EMAIL = re.compile(r"([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")


# a phone number: 9 digits or more, maybe with +, spaces, dashes, dots or parentheses between
# (9, so that a date such as 2026-10-25 or a price such as 37,108.56 is left alone)
_PHONE = re.compile(r"\+?\(?\d(?:[\s().-]*\d){8,}")


def _keep_last_two(text: str) -> str:
    """Letters and digits starred but the last two; spaces and punctuation kept (the shape)."""
    shown = [i for i, c in enumerate(text) if c.isalnum()][-2:]
    return "".join("*" if c.isalnum() and i not in shown else c for i, c in enumerate(text))


def mask(value: Any, sensitive: set[str], key: str = "") -> Any:
    """Personal data masked, for the samples a report shows.

    Fields named in ``sensitive`` keep their shape and last two characters; in every other
    text, e-mail addresses keep their first character and domain, and phone numbers their
    last two digits (a customer often writes them into a message).
    """
    if isinstance(value, dict):
        return {k: mask(v, sensitive, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, sensitive, key) for v in value]
    if not isinstance(value, str):
        return value
    if key in sensitive:
        if "@" in value:
            user, _, domain = value.partition("@")
            return user[:1] + "***@" + domain
        return _keep_last_two(value)
    return _PHONE.sub(lambda m: _keep_last_two(m.group()), _EMAIL.sub(r"\1***@\2", value))


LISTED_DAMAGED = 100  # ids of documents failing the schema listed per collection (all counted)


def _schema_pass(coll: Any, required: Mapping[str, str]) -> dict[str, Any]:
    """One streaming pass over every document: field presence, and the ids of those that fail
    the collection's ``required_fields``, with why."""
    presence: dict[str, int] = {}
    damaged: list[dict[str, str]] = []
    seen = bad = 0
    for batch in raw_batches(coll):
        for raw in bson_documents(batch, where=f"collection {coll.name}"):
            seen += 1
            for k in top_level(raw):
                presence[k] = presence.get(k, 0) + 1
            reason = invalid_reason(raw, required)
            if reason:
                bad += 1
                if len(damaged) < LISTED_DAMAGED:
                    damaged.append({"_id": str(decode_id(id_element(raw))), "reason": reason})
    return {
        "checked": seen,
        "damaged": bad,
        "damaged_ids": damaged,
        "field_presence": {k: round(v / seen, 3) for k, v in sorted(presence.items())}
        if seen
        else {},
    }


def scan_mongodb(
    db: Any,
    collections: dict[str, str | None],
    sensitive: set[str],
    samples: int,
    schemas: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Per collection: count, time range, every document checked against its schema (field
    presence, damaged documents by id), masked samples (read-only)."""

    def one(name: str, ts: str | None) -> dict[str, Any]:
        coll = db[name]
        out: dict[str, Any] = {"count": coll.count_documents({})}
        if ts and out["count"]:
            lo = coll.find_one({ts: {"$exists": True}}, sort=[(ts, 1)], projection={ts: 1})
            hi = coll.find_one({ts: {"$exists": True}}, sort=[(ts, -1)], projection={ts: 1})
            out["time_field"] = ts
            out["oldest"] = lo[ts].isoformat() if lo and isinstance(lo.get(ts), datetime) else None
            out["newest"] = hi[ts].isoformat() if hi and isinstance(hi.get(ts), datetime) else None
        out.update(_schema_pass(coll, (schemas or {}).get(name, {})))
        docs = list(coll.find({}).limit(samples))
        out["samples"] = [
            json.loads(
                json_util.dumps(mask(d, sensitive), json_options=json_util.RELAXED_JSON_OPTIONS)
            )
            for d in docs[:samples]
        ]
        return out

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(collections)))) as pool:
        futures = {n: pool.submit(one, n, ts) for n, ts in collections.items()}
        return {n: f.result() for n, f in futures.items()}


def _storable(value: Any) -> bool:
    """Whether BSON can hold ``value``."""
    try:
        bson.encode({"v": value})
    except BSON_REFUSES:
        return False
    return True


def existing_keys(coll: Any, keys: list[str]) -> set[str]:
    """Which of these conversation keys MongoDB has.

    A key BSON cannot hold cannot be in MongoDB either: it is not asked about (asking would fail
    the whole batch), so it counts as missing and ``recover`` names it.
    """
    ids = [v for k in keys if k.startswith("_id:") and _storable(v := json_util.loads(k[4:]))]
    sessions = [
        s for k in keys if k.startswith("session_id:") and _storable(s := k[len("session_id:") :])
    ]
    have: set[str] = set()
    for i in range(0, len(ids), 1000):
        for d in coll.find({"_id": {"$in": ids[i : i + 1000]}}, {"_id": 1}):
            have.add(conversation_key({"_id": d["_id"], "session_id": "", "messages": []}))
    for i in range(0, len(sessions), 1000):
        for d in coll.find({"session_id": {"$in": sessions[i : i + 1000]}}, {"session_id": 1}):
            have.add("session_id:" + d["session_id"])
    return have


KEY_BATCH = 1000  # conversations looked up in MongoDB at a time
