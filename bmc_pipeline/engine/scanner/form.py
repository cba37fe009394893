"""What a conversation is, its identity, and the scan form its versions are compared in.

A conversation is a JSON object with a string ``session_id`` and a list ``messages``; its
identity is its ``_id`` when it has one, else its ``session_id``. Copies are compared in a *scan
form*: dates are the text ``str()`` gives a UTC datetime (what ``default=str`` exports already
hold), so an Extended JSON export and a naive-date export of one document hash the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import bson
import bson.errors
import orjson
from bson import json_util


def _ejson_hook(obj: dict[str, Any]) -> Any:
    """Extended JSON to BSON types, for the objects that can be Extended JSON (a ``$`` key).

    A malformed one (``{"$oid": "zz"}``, ``{"$date": "soon"}``) stays the plain object it is:
    what the file says is kept, and one bad value does not cost the conversation around it.
    """
    for k in obj:
        if k.startswith("$"):
            try:
                return json_util.object_hook(obj)
            except (bson.errors.BSONError, ValueError, TypeError, KeyError, OverflowError):
                return obj
    return obj


EJSON_DECODER = json.JSONDecoder(object_hook=_ejson_hook)


PLAIN_DECODER = json.JSONDecoder()  # for text with no '"$': no Python call per object


def may_hold_ejson(text: str) -> bool:
    """Whether ``text`` has a ``"$`` (an Extended JSON key such as ``"$oid"`` may begin there).

    Looks for the rare ``$`` first: ``'"$' in text`` is searched character by character because
    quotes are everywhere in JSON, ``find("$")`` by a word-wide scan (50 against 0.6 microseconds
    for 50 kB, measured); a price like ``US$ 120`` costs one look back.
    """
    i = text.find("$")
    while i != -1:
        if i and text[i - 1] == '"':
            return True
        i = text.find("$", i + 1)
    return False


def decode_json(text: str) -> Any:
    """One JSON text: Extended JSON aware when it may hold some, else orjson (several times faster).

    Where orjson refuses what the standard library accepts (NaN, integers beyond 64 bits, lone
    surrogates), the standard library decides, so the result never depends on which one ran.
    """
    if may_hold_ejson(text):
        return EJSON_DECODER.decode(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return PLAIN_DECODER.decode(text)


def is_conversation(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("session_id"), str)
        and isinstance(obj.get("messages"), list)
    )


def conversation_key(conv: dict[str, Any]) -> str:
    """The identity a conversation is matched by: its ``_id`` if it has one, else its session.

    The ``_id`` is written as canonical Extended JSON; ObjectIds (``{"$oid": ...}`` in the scan
    form) and strings, nearly every ``_id`` there is, take a shortcut that gives the same text
    without the general encoder.
    """
    if "_id" in conv:
        i = conv["_id"]
        if type(i) is dict and len(i) == 1 and type(oid := i.get("$oid")) is str:
            return '_id:{"$oid": "' + oid + '"}'
        if type(i) is bson.ObjectId:
            return '_id:{"$oid": "' + str(i) + '"}'
        if type(i) is str:
            return "_id:" + json.dumps(i)
        return "_id:" + str(json_util.dumps(i, json_options=json_util.CANONICAL_JSON_OPTIONS))
    return "session_id:" + str(conv["session_id"])


def _hash_default(value: Any) -> Any:
    """Values JSON lacks, for :func:`content_hash`: dates as the scan form writes them (see
    :func:`_date_text`), other BSON types as canonical Extended JSON.

    Dates outside the configured date fields stay dates in the scan form; written as text of the
    same shape, a BSON or Extended JSON copy still hashes like a ``default=str`` export, which
    has that text in those fields.
    """
    if type(value) is bson.ObjectId:
        return {"$oid": str(value)}
    if isinstance(value, datetime):
        return _date_text(value)
    return json_util.default(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


def content_hash(conv: dict[str, Any]) -> str:
    """Identifies a version of a conversation: SHA-256 of its scan form (see :func:`canonical`).

    Encoded by orjson (other BSON types as canonical Extended JSON): several times faster than
    encoding BSON, and this runs once per conversation found. Key order counts, as it does in
    MongoDB.
    """
    try:
        data = orjson.dumps(conv, default=_hash_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits
        data = json_util.dumps(conv, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _is_date_text(v: str) -> bool:
    """Shaped as the scan form writes a date: ``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``.

    Only the shape is looked at. That is enough for the scan form to be well defined (text of this
    shape is never changed), and it is what ``str()`` of a UTC datetime, and so
    ``json.dumps(default=str)``, writes. Whether it is a real date is settled where one is needed
    (:func:`conversation_epoch`, :func:`to_document`), and text that is not stays text.
    """
    n = len(v)
    return ((n == 32 and v[19] == ".") or n == 25) and v[10] == " " and v.endswith("+00:00")


_fromiso = datetime.fromisoformat


def _date_text(v: Any) -> Any:
    """A date as the scan form writes it (see :func:`_is_date_text`); anything else unchanged.

    Dates are datetimes (BSON, Extended JSON) or ISO-8601 text in any offset, with or without
    ``Z``, fraction or time; a date without an offset is taken as UTC, as MongoDB stores it.
    """
    if type(v) is str:
        if _is_date_text(v) or len(v) < 10 or v[4] != "-":
            return v
        try:
            v = _fromiso(v[:-1] + "+00:00" if v[-1] == "Z" else v)
        except ValueError:
            return v
    elif not isinstance(v, datetime):
        return v
    return str(v.astimezone(timezone.utc) if v.tzinfo else v.replace(tzinfo=timezone.utc))


def _date_value(v: Any) -> Any:
    """Scan-form date text back to a datetime (UTC); anything else unchanged."""
    if type(v) is str and _is_date_text(v):
        try:
            return _fromiso(v)
        except ValueError:
            return v
    return v


def _epoch(v: Any) -> float | None:
    """Seconds since 1970 of a date (scan-form text or a datetime; without an offset, UTC)."""
    d = _date_value(v)
    if not isinstance(d, datetime):
        return None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()


def conversation_epoch(conv: dict[str, Any]) -> float | None:
    """When a conversation (in scan form) was last changed: ``updated_at``, else its last message.

    As seconds since 1970, for ranking copies: numbers compare correctly whatever the source's
    time zone, and the report turns the newest back into ISO text. The scan form writes every
    date in UTC in one shape, so the latest message time is the greatest text and only that one
    is parsed. ``None`` when the conversation carries no time at all.
    """
    t = _epoch(conv.get("updated_at"))
    if t is not None:
        return t
    times = [
        ts
        for m in conv["messages"]
        if type(m) is dict and type(ts := m.get("timestamp")) is str and _is_date_text(ts)
    ]
    # the greatest that is a real date (nearly always the first)
    for ts in sorted(times, reverse=True):
        t = _epoch(ts)
        if t is not None:
            return t
    return None


def iso_utc(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


_HEX24 = frozenset("0123456789abcdef")


def canonical(conv: dict[str, Any], date_fields: frozenset[str]) -> dict[str, Any]:
    """The scan form of a conversation: one text for one content, whatever wrote it.

    The same conversation reaches the scanner from MongoDB (BSON: ObjectId, datetimes), from
    Extended JSON, and from ``json.dumps(default=str)`` exports (24-hex-digit ``_id`` text, dates
    as ``str()``). In the scan form an ObjectId ``_id`` or a 24-hex-digit ``_id`` string is
    ``{"$oid": ...}``, and every date in ``date_fields`` and in the messages' ``timestamp`` is
    text shaped as ``str()`` of the UTC datetime. Nothing else is changed. Content hashes, and so
    duplicates and conflicts, are taken of this form; :func:`to_document` turns it back into what
    MongoDB stores.

    Why text and that text: exports written with ``default=str`` are the bulk of what a scan
    reads, and their dates already are scan form, so the hot loop (about ten messages per
    conversation) only checks their shape, where parsing every date and encoding it again cost
    more than parsing the JSON. It works in place and returns ``conv``: conversations come
    straight from the parser and nobody else holds them.
    """
    i = conv.get("_id")
    if type(i) is str:
        if len(i) == 24 and set(i) <= _HEX24:
            conv["_id"] = {"$oid": i}
    elif type(i) is bson.ObjectId:
        conv["_id"] = {"$oid": str(i)}
    for f in date_fields:
        if f in conv:
            conv[f] = _date_text(conv[f])
    for m in conv["messages"]:
        if type(m) is dict and "timestamp" in m:
            ts = m["timestamp"]
            # _is_date_text, written out: this line runs for every message of every copy
            if not (
                type(ts) is str
                and ((len(ts) == 32 and ts[19] == ".") or len(ts) == 25)
                and ts[10] == " "
                and ts.endswith("+00:00")
            ):
                m["timestamp"] = _date_text(ts)
    return conv


def to_document(conv: dict[str, Any], date_fields: frozenset[str]) -> dict[str, Any]:
    """A conversation in scan form as MongoDB stores it: ObjectId ``_id``, datetimes (in place)."""
    i = conv.get("_id")
    if type(i) is dict and len(i) == 1 and bson.ObjectId.is_valid(oid := i.get("$oid")):
        conv["_id"] = bson.ObjectId(oid)
    for f in date_fields:
        if f in conv:
            conv[f] = _date_value(conv[f])
    for m in conv["messages"]:
        if type(m) is dict and "timestamp" in m:
            m["timestamp"] = _date_value(m["timestamp"])
    return conv


def find_conversations(value: Any) -> Iterator[dict[str, Any]]:
    """Conversation-shaped objects anywhere inside ``value`` (not inside one another)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if is_conversation(v):
            yield v
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend(reversed(v))
