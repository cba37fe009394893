"""Just enough raw BSON parsing to find a document's ``_id`` without decoding the document.

Decoding BSON into Python objects runs at tens of MB/s; backups and restores must move hundreds.
The ``_id`` element is usually the first one, so finding it costs a few byte comparisons.
"""

from __future__ import annotations

from typing import Any

import bson
import bson.errors

from bmc_pipeline.engine.errors import IntegrityError

# What bson.encode raises for a value BSON cannot hold (a lone surrogate, an integer over 64 bits).
BSON_REFUSES = (UnicodeEncodeError, bson.errors.InvalidDocument, OverflowError)

# Fixed value sizes by BSON type byte; types with variable sizes are handled below.
_FIXED = {
    0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16,
    0xFF: 0, 0x7F: 0,
}  # fmt: skip


def _cstring_end(raw: bytes, pos: int) -> int:
    end = raw.index(b"\x00", pos)
    return end + 1


def _value_size(raw: bytes, t: int, pos: int) -> int:
    if t in _FIXED:
        return _FIXED[t]
    if t in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes
        return 4 + int.from_bytes(raw[pos : pos + 4], "little")
    if t in (0x03, 0x04, 0x0F):  # document, array, code with scope: int32 total length
        return int.from_bytes(raw[pos : pos + 4], "little")
    if t == 0x05:  # binary: int32 length + subtype + bytes
        return 5 + int.from_bytes(raw[pos : pos + 4], "little")
    if t == 0x0B:  # regex: two cstrings
        return _cstring_end(raw, _cstring_end(raw, pos)) - pos
    if t == 0x0C:  # DBPointer: string + 12-byte ObjectId
        return 4 + int.from_bytes(raw[pos : pos + 4], "little") + 12
    raise IntegrityError(f"unknown BSON type 0x{t:02x}")


def id_element(raw: bytes) -> bytes:
    """The ``_id`` element's type byte and value bytes: a canonical key for the document's id."""
    pos, end = 4, len(raw) - 1
    while pos < end:
        t = raw[pos]
        name_end = _cstring_end(raw, pos + 1)
        size = _value_size(raw, t, name_end)
        if raw[pos + 1 : name_end - 1] == b"_id":
            return bytes([t]) + raw[name_end : name_end + size]
        pos = name_end + size
    raise IntegrityError("document has no _id")


def id_document(elem: bytes) -> bytes:
    """Raw BSON of ``{"_id": <id>}`` from an element made by :func:`id_element`."""
    body = elem[:1] + b"_id\x00" + elem[1:]
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def decode_id(elem: bytes) -> Any:
    """The Python value of an id element (for queries such as ``{"_id": {"$in": [...]}}``)."""
    return bson.decode(id_document(elem))["_id"]


def encode_id(value: Any) -> bytes:
    """The id element of a Python id value; the inverse of :func:`decode_id`."""
    return id_element(bson.encode({"_id": value}))


# BSON type bytes that satisfy each type name used in ``required_fields``.
TYPE_BYTES: dict[str, frozenset[int]] = {
    "string": frozenset({0x02}),
    "int": frozenset({0x10, 0x12}),
    "number": frozenset({0x01, 0x10, 0x12, 0x13}),
    "bool": frozenset({0x08}),
    "date": frozenset({0x09}),
    "array": frozenset({0x04}),
    "object": frozenset({0x03}),
    "objectId": frozenset({0x07}),
}


def top_level(raw: bytes) -> dict[str, tuple[int, bytes]]:
    """Each top-level field's (type byte, value bytes), without decoding any value."""
    out: dict[str, tuple[int, bytes]] = {}
    pos, end = 4, len(raw) - 1
    while pos < end:
        t = raw[pos]
        name_end = _cstring_end(raw, pos + 1)
        size = _value_size(raw, t, name_end)
        out[raw[pos + 1 : name_end - 1].decode("utf-8", "replace")] = (
            t,
            raw[name_end : name_end + size],
        )
        pos = name_end + size
    return out


def string_value(t: int, value: bytes) -> str | None:
    """The text of a BSON string element's value, else None."""
    if t != 0x02:
        return None
    return value[4:-1].decode("utf-8", "replace")


def datetime_ms(t: int, value: bytes) -> int | None:
    """Milliseconds since the epoch of a BSON date element's value, else None."""
    if t != 0x09:
        return None
    return int.from_bytes(value, "little", signed=True)
