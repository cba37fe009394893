"""The recovery scanner: what is recoverable, in MongoDB and in files scattered on disk.

**Files.** Under a root, the configured directories are walked (without following links) for the
configured name patterns, plain or compressed (``.gz``, ``.zst``). Each file is read as a stream:

* a JSON array is parsed one element at a time, so memory is bounded by the largest element, not
  the file; when the array is cut short or damaged, the elements before the damage are kept
  ("salvaged") and the byte offset of the damage is reported;
* NDJSON (one JSON value per line) is parsed line by line, bad lines reported with their offset;
* any other JSON value (an object nesting conversations at any depth, a single conversation, the
  backup envelope) is parsed whole;
* Extended JSON values (``{"$oid": ...}``, ``{"$date": ...}``) become BSON types.

**The rule** for "this is a conversation": a JSON object with a string ``session_id`` and a list
``messages``. Its identity is its ``_id`` when it has one, else its ``session_id``.

**Analysis.** The same conversation found more than once is a duplicate; found with different
contents it is a conflict (the newest, by ``updated_at`` or else its last message, is named). A
conversation MongoDB lacks is *recoverable*; ``recover`` writes the newest version of each through
the restore engine (validation, rollback point, verification).
"""

from __future__ import annotations

import codecs
import fnmatch
import gc
import hashlib
import heapq
import itertools
import json
import multiprocessing
import multiprocessing.context
import os
import re
import stat
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import bson
import bson.errors
import orjson
import zstandard
from bson import json_util

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.store import BackupStore, backup_id_of_manifest

CHUNK = 1 << 20
REPORT_PLACEHOLDER = "<this report>.json"  # replaced by the real path when the report is written
MAX_WHOLE_FILE = 512 << 20  # a non-array JSON file larger than this is reported, not parsed


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


_DECODER = json.JSONDecoder(object_hook=_ejson_hook)
_PLAIN = json.JSONDecoder()  # for text with no '"$': no Python call per object


def _may_hold_ejson(text: str) -> bool:
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


def _decode(text: str) -> Any:
    """One JSON text: Extended JSON aware when it may hold some, else orjson (several times faster).

    Where orjson refuses what the standard library accepts (NaN, integers beyond 64 bits, lone
    surrogates), the standard library decides, so the result never depends on which one ran.
    """
    if _may_hold_ejson(text):
        return _DECODER.decode(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _PLAIN.decode(text)


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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


def _iso(epoch: float | None) -> str | None:
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


class _Spool:
    """The conversations a worker finds in a batch of files, folded per conversation, on disk.

    Per distinct key: copies, versions (content hashes), the first ``PLACES_LISTED`` places
    (file number, position) and the newest copy; one JSON array per line. The fold spans the
    files of a batch, which are read in file-number order, so places arrive in the report's order
    and a copy seen in an earlier file of the batch costs a counter, not a line. It is flushed to
    disk every ``FLUSH_KEYS`` distinct keys (a key may then have several lines, which the parent
    merges), so a worker's memory stays bounded however large or varied its files; the parent
    reads a few lines per conversation instead of one per copy.
    """

    FLUSH_KEYS = 20_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("wb")
        self._fold: dict[str, list[Any]] = {}
        self.file_no = 0
        self.count = 0  # conversations of the current file

    def start(self, file_no: int) -> None:
        """Conversations from now on belong to file ``file_no`` (ascending within a spool)."""
        self.file_no, self.count = file_no, 0

    def add(self, conv: dict[str, Any]) -> None:
        """One conversation, in scan form."""
        key = conversation_key(conv)
        h = content_hash(conv)
        idx = self.count
        self.count += 1
        g = self._fold.get(key)
        if g is None:
            t = conversation_epoch(conv)
            place = (self.file_no, idx)
            self._fold[key] = [1, {h}, [place], [conv["session_id"], h, t, *place]]
            if len(self._fold) >= self.FLUSH_KEYS:
                self._flush()
            return
        g[0] += 1
        g[1].add(h)
        if len(g[2]) < PLACES_LISTED:
            g[2].append((self.file_no, idx))
        newest = g[3]
        if h == newest[1]:  # the same content has the same time: a later copy wins a tie
            newest[3], newest[4] = self.file_no, idx
            return
        t = conversation_epoch(conv)
        if (t if t is not None else _NO_TIME) >= (newest[2] if newest[2] is not None else _NO_TIME):
            g[3] = [conv["session_id"], h, t, self.file_no, idx]

    def _flush(self) -> None:
        for key, (copies, versions, places, newest) in self._fold.items():
            self._fh.write(_dump_line([key, copies, sorted(versions), places, newest]))
        self._fold.clear()

    def close(self) -> None:
        self._flush()
        self._fh.close()


@dataclass
class FileReport:
    path: str
    size: int
    shape: str = ""
    compressed: str = ""
    conversations: int = 0
    recoverable: int = 0
    salvaged: bool = False
    error: str | None = None
    error_offset: int | None = None


# -- reading files ---------------------------------------------------------------------------------
class _Decompressed:
    """A gzip or zstd file read as a stream that gives out all it can and then says what is wrong.

    The standard readers lose what a cut-short file still holds (``GzipFile.read`` raises
    before returning the data it decompressed; zstd's stream reader returns nothing and no
    error), and a backup interrupted while being copied is exactly what a recovery scan meets.
    Here the data decompressed before the end is returned first, so the conversations in it are
    salvaged, and the next read raises ``EOFError`` naming the damage. Concatenated gzip members
    and zstd frames are read one after another.

    Compressed input is fed a little at a time and only until a read is satisfied, so what one
    feed can expand to is bounded and memory stays flat, as for plain files: deflate expands at
    most about 1,000 times (16 kB → 16 MB), zstd up to about 32,000 times (1 kB → 32 MB; fed
    16 kB at a time, a 32 kB file of 1 GB of spaces took 1.1 GB of memory).
    """

    FEED: ClassVar[dict[str, int]] = {"gzip": 16 << 10, "zstd": 1 << 10}

    def __init__(self, path: Path, kind: str) -> None:
        self._fh = path.open("rb")
        self._kind = kind
        self._d = self._new()
        self._fed = False  # the current member or frame has been given data
        self._out = bytearray()
        self._error: Exception | None = None
        self._consumed = 0  # compressed bytes read

    def _new(self) -> Any:
        if self._kind == "gzip":
            return zlib.decompressobj(wbits=31)
        return zstandard.ZstdDecompressor().decompressobj()

    def _feed(self, data: bytes) -> None:
        while data:
            try:
                self._out += self._d.decompress(data)
            except (zlib.error, zstandard.ZstdError) as exc:
                raise ValueError(
                    f"corrupt {self._kind} data near compressed byte {self._consumed}: {exc}"
                ) from None
            self._fed = True
            if not self._d.eof:
                return
            data = self._d.unused_data
            if not data.strip(b"\x00"):  # padding after the last member
                return
            self._d, self._fed = self._new(), False

    def read(self, n: int) -> bytes:
        while len(self._out) < n and self._error is None:
            chunk = self._fh.read(self.FEED[self._kind])
            if not chunk:
                if self._fed and not self._d.eof:
                    self._error = EOFError(
                        f"the {self._kind} file is cut short after {self._consumed} compressed "
                        "bytes (the data before that was read)"
                    )
                break
            try:
                self._feed(chunk)
            except ValueError as exc:  # corrupt: what came before it is still given out
                self._error = exc
            self._consumed += len(chunk)
        if not self._out and self._error is not None:
            raise self._error
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def tell(self) -> int:
        """Compressed bytes read so far (progress is counted in file bytes)."""
        return self._consumed

    def __enter__(self) -> _Decompressed:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def _open(path: Path) -> tuple[Any, str]:
    if path.name.endswith(".gz"):
        return _Decompressed(path, "gzip"), "gzip"
    if path.name.endswith(".zst"):
        return _Decompressed(path, "zstd"), "zstd"
    return path.open("rb"), ""


# -- progress ---------------------------------------------------------------------------------------
Progress = Callable[[int, int], None]
"""Told (bytes of files read, bytes of files to read) now and then during a scan."""

# Bytes read by this process's scan work: a counter shared with the main process, set in each
# worker by _worker_start; when the main process reads files itself, the thread doing so has
# its own (a process may run several scans, from the API's threads).
_READ: Any = None
_LOCAL = threading.local()


def _count_read(n: int) -> None:
    in_process = getattr(_LOCAL, "reporter", None)
    counter = in_process.counter if in_process is not None else _READ
    if counter is not None and n > 0:
        with counter.get_lock():
            counter.value += n
        if in_process is not None:
            in_process.tick()


def _worker_start(counter: Any) -> None:
    """Runs in each worker as it starts: progress goes to the main process's counter."""
    global _READ
    _READ = counter


class _Reporter:
    """Calls ``progress`` at most twice a second, and once at the end."""

    INTERVAL_S = 0.5

    def __init__(self, progress: Progress | None, counter: Any, total: int) -> None:
        self.progress, self.counter, self.total = progress, counter, total
        self._last = 0.0

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (final or now - self._last >= self.INTERVAL_S):
            self._last = now
            done = self.total if final else min(self.counter.value, self.total)
            self.progress(done, self.total)


class _Text:
    """Decoded text of a binary stream, in chunks, with the byte offset of each chunk's start."""

    def __init__(self, raw: BinaryIO | _Decompressed, size_hint: int = CHUNK) -> None:
        self.raw = raw
        # utf-8-sig: a byte order mark (Windows tools write one) is dropped
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.bytes_read = 0
        self._counted = 0  # file bytes (compressed, for a compressed file) counted as progress
        # a small file is read in one call of its own size: asking for a whole chunk would
        # allocate (and map and unmap) a megabyte for each of thousands of small files
        self.chunk = min(CHUNK, max(size_hint + 1, 4096))

    def read(self) -> str:
        data = self.raw.read(self.chunk)
        self.chunk = CHUNK
        if data and b"\x00" in data:
            raise ValueError(
                f"binary content (a NUL byte near byte {self.bytes_read + data.index(0)})"
            )
        try:
            text: str = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise ValueError(f"invalid UTF-8 at byte {self.bytes_read + exc.start}") from None
        self.bytes_read += len(data)
        at = self.raw.tell()
        _count_read(at - self._counted)
        self._counted = at
        return text


def _values(path: Path, report: FileReport) -> Iterator[Any]:
    """The JSON values of a file: array elements, NDJSON lines, or the one whole value."""
    fh, report.compressed = _open(path)
    with fh:
        text = _Text(fh, CHUNK if report.compressed else report.size)
        buf = text.read()
        consumed = 0  # characters of the file before ``buf``
        first_char = _NOT_JSON_SPACE.search(buf)  # not buf.lstrip(): no copy of the chunk
        start = first_char.start() if first_char else len(buf)
        if first_char is None:
            report.shape = "empty"
            report.error = "empty file"
            return
        first = buf[start]
        is_ndjson = first == "{" and _looks_like_ndjson(buf)
        if first == "[":
            report.shape = "array"
            yield from _array_items(text, buf, start + 1, report)
        elif is_ndjson:
            report.shape = "ndjson"
            yield from _ndjson(text, buf, report)
        else:
            while True:
                more = text.read()
                if not more:
                    break
                buf += more
                if len(buf) > MAX_WHOLE_FILE:
                    report.error = (
                        f"a single JSON value larger than {MAX_WHOLE_FILE >> 20} MiB; not parsed"
                    )
                    return
            try:
                value = _decode(buf)
            except json.JSONDecodeError as exc:
                report.error = f"invalid JSON: {exc.msg}"
                report.error_offset = consumed + exc.pos
                return
            report.shape = "object" if isinstance(value, dict) else type(value).__name__
            yield value


_NOT_JSON_SPACE = re.compile(r"[^ \t\r\n]")
_NOT_SPACE_OR_COMMA = re.compile(r"[^ \t\r\n,]")


def _looks_like_ndjson(buf: str) -> bool:
    lines = [ln for ln in buf.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
    except json.JSONDecodeError:
        return False
    return True


def _back_over_space(buf: str, i: int, floor: int) -> int:
    """The last position at or before ``i`` (and after ``floor``) that is not JSON white space."""
    while i > floor and buf[i] in " \t\r\n":
        i -= 1
    return i


class _FastRuns:
    """Parse many array elements at once with orjson, instead of one by one.

    The elements of an exported array usually all begin alike (``{"_id"``): the text of the
    element at hand up to its first key. An occurrence of that lead after a comma, near the end of
    the buffer, is probably where a later element starts; everything before it is parsed as one
    JSON array. That parse succeeds only if the cut really is between two top-level elements (a
    cut inside a string or a nested value leaves the text unbalanced), so a wrong guess costs time,
    never a wrong result. After repeated wrong guesses the file is left to the element-by-element
    path, which also reports damage with its offset.

    A run is cut near ``RUN_CHARS`` characters, not at the end of the buffer: the objects parsed
    from a run are then put in scan form, hashed and folded while they are still in the processor's
    cache. Runs of a whole megabyte made a large file a third slower per conversation than
    small files (measured: 58 against 80 MB/s for one process).
    """

    ATTEMPTS = 3
    RUN_CHARS = 64 << 10

    def __init__(self) -> None:
        self.failures = 0
        self.skip = 0

    def ready(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return self.failures < 3

    def run(self, buf: str, pos: int) -> tuple[list[Any], int] | None:
        q1 = buf.find('"', pos + 1)
        q2 = buf.find('"', q1 + 1) if q1 != -1 else -1
        if buf[pos] != "{" or q2 == -1 or q2 - pos > 200:
            self._miss()
            return None
        lead = buf[pos : q2 + 1]
        limit = pos + self.RUN_CHARS
        hi = len(buf)
        if limit >= hi:  # the buffer may hold the rest of the array: try it whole, closing ']'
            end = _back_over_space(buf, hi - 1, pos)
            if buf[end] == "]":
                values = self._parse(buf[pos:end])
                if values is not None:
                    return values, end
        for _ in range(self.ATTEMPTS):
            k = buf.rfind(lead, pos + 1, min(hi, limit))
            if k == -1:  # an element longer than a run: cut at the next start after it
                k = buf.find(lead, limit, hi)
            if k == -1:
                return None  # one element in the buffer: the slow path reads on
            cut = _back_over_space(buf, k - 1, pos)
            if buf[cut] == ",":
                values = self._parse(buf[pos:cut])
                if values is not None:
                    return values, cut + 1
            hi = k
        self._miss()
        return None

    @staticmethod
    def _parse(piece: str) -> list[Any] | None:
        """The elements of ``piece`` (array elements and their commas), or None if it is not that."""
        try:
            values = (
                _DECODER.decode("[" + piece + "]")
                if _may_hold_ejson(piece)
                else orjson.loads("[" + piece + "]")
            )
        except (orjson.JSONDecodeError, json.JSONDecodeError):
            return None
        return values if isinstance(values, list) else None

    def _miss(self) -> None:
        self.failures += 1
        self.skip = 64


def _array_items(text: _Text, buf: str, pos: int, report: FileReport) -> Iterator[Any]:
    offset = 0  # characters dropped from the front of buf
    eof = False
    fast = _FastRuns()
    while True:
        # skip white space and the comma between elements
        while True:
            next_value = _NOT_SPACE_OR_COMMA.search(buf, pos)  # a search, not a loop per char
            pos = next_value.start() if next_value else len(buf)
            if pos < len(buf) or eof:
                break
            more = text.read()
            eof = not more
            buf, pos, offset = buf[pos:] + more, 0, offset + pos
        if pos >= len(buf):
            report.error = "the array is not closed: the file was cut short"
            report.error_offset = offset + pos
            report.salvaged = True
            return
        if buf[pos] == "]":
            return
        if fast.ready():
            run = fast.run(buf, pos)
            if run is not None:
                values, pos = run
                yield from values
                continue
        while True:
            try:
                value, end = _PLAIN.raw_decode(buf, pos)
                # Extended JSON inside: decode this element again with it
                if _may_hold_ejson(buf[pos:end]):
                    value = _DECODER.decode(buf[pos:end])
                break
            except json.JSONDecodeError as exc:
                if eof:
                    report.error = f"invalid JSON in the array: {exc.msg}"
                    report.error_offset = offset + exc.pos
                    report.salvaged = True
                    return
                more = text.read()
                eof = not more
                buf, pos, offset = buf[pos:] + more, 0, offset + pos
                if len(buf) > MAX_WHOLE_FILE:
                    report.error = f"an array element larger than {MAX_WHOLE_FILE >> 20} MiB"
                    report.error_offset = offset
                    return
        yield value
        pos = end


def _ndjson(text: _Text, buf: str, report: FileReport) -> Iterator[Any]:
    offset = 0
    while True:
        more = text.read()
        buf += more
        lines = buf.split("\n")
        buf = lines.pop() if more else ""
        for line in lines:
            if line.strip():
                try:
                    yield _decode(line)
                except json.JSONDecodeError as exc:
                    if report.error is None:
                        report.error = f"invalid JSON line: {exc.msg}"
                        report.error_offset = offset + exc.pos
                        report.salvaged = True
            offset += len(line) + 1
        if not more:
            return


def scan_file(
    path_text: str, date_fields: frozenset[str], spool: _Spool, file_no: int = 0
) -> FileReport:
    """Everything one file holds, its records written to ``spool`` as file ``file_no``.

    Runs in worker processes and never raises for a bad file. The cyclic garbage collector is
    paused while parsing: parsed JSON has no cycles, and its repeated passes over millions of new
    objects cost more than the parse.
    """
    path = Path(path_text)
    report = FileReport(path=path_text, size=path.stat().st_size if path.exists() else 0)
    spool.start(file_no)
    paused = gc.isenabled()
    gc.disable()
    try:
        for value in _values(path, report):
            if is_conversation(value):  # an array of conversations: most of what is found
                spool.add(canonical(value, date_fields))
                continue
            for raw_conv in find_conversations(value):
                spool.add(canonical(raw_conv, date_fields))
    except (OSError, ValueError, EOFError, zstandard.ZstdError, RecursionError) as exc:
        report.error = str(exc) if not isinstance(exc, RecursionError) else "JSON nested too deeply"
        report.salvaged = bool(spool.count)
    except Exception as exc:  # one unforeseen file must not end the scan
        report.error = f"could not be read: {type(exc).__name__}: {exc}"
        report.salvaged = bool(spool.count)
    finally:
        if paused:
            gc.enable()
    report.conversations = spool.count
    return report


_BSON_DATES: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True, datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)


def archive_conversations(
    manifest: Path, keyring: KeyRing, collection: str = "conversations"
) -> Iterator[dict[str, Any]]:
    """Conversations stored in one of our backups, read through its (authenticated) manifest."""
    bid = backup_id_of_manifest(manifest.name)
    if bid is None:
        raise BmcError(f"{manifest} is not a backup manifest")
    store = BackupStore(manifest.parent.parent)
    ref = store.ref(bid)
    m = store.load_manifest(ref, keyring)
    entry = m.get("collections", {}).get(collection)
    if not entry or not entry.get("documents"):
        return
    with (manifest.parent / str(entry["documents"]["file"])).open("rb") as fh:
        for raw in ArchiveReader(fh, keyring, name=f"backup {bid}").documents():
            doc = bson.decode(raw, codec_options=_BSON_DATES)
            if is_conversation(doc):
                yield doc


def scan_archive(
    path: Path, keyring: KeyRing | None, spool: _Spool, file_no: int, date_fields: frozenset[str]
) -> FileReport:
    """One of our backup manifests: the conversations of its archive (needs the key)."""
    report = FileReport(path=str(path), size=path.stat().st_size, shape="bmc_pipeline backup")
    if keyring is None:
        report.error = "a bmc_pipeline backup: configure the backup key to look inside it"
        return report
    spool.start(file_no)
    try:
        for conv in archive_conversations(path, keyring):
            spool.add(canonical(conv, date_fields))
    except (BmcError, OSError) as exc:
        report.error = str(exc)
        report.salvaged = bool(spool.count)
    report.conversations = spool.count
    return report


def conversations_of(
    path: Path, date_fields: frozenset[str], keyring: KeyRing | None = None
) -> Iterator[dict[str, Any]]:
    """The conversations of a file in scan form, numbered as the scan did (for recovery)."""
    if backup_id_of_manifest(path.name) is not None and keyring is not None:
        for doc in archive_conversations(path, keyring):
            yield canonical(doc, date_fields)
        return
    report = FileReport(path=str(path), size=0)
    for value in _values(path, report):
        for conv in find_conversations(value):
            yield canonical(conv, date_fields)


# -- walking the tree ------------------------------------------------------------------------------
def candidate_files(
    root: Path, directories: list[str], patterns: list[str]
) -> tuple[list[Path], list[str]]:
    """Files to scan, and problems met on the way (unreadable directories, links not followed,
    names that match but are not regular files: a named pipe would block the scan forever)."""
    names = set()
    for pat in patterns:
        names.add(pat)
        for suffix in (".gz", ".zst"):
            names.add(pat + suffix)
        if pat.endswith(".json"):
            names.add(pat[: -len(".json")] + ".ndjson")
            names.add(pat[: -len(".json")] + ".jsonl")
    out: dict[str, Path] = {}
    problems: list[str] = []

    def consider(p: Path) -> None:
        if not any(fnmatch.fnmatch(p.name, pat) for pat in names):
            return
        try:
            mode = p.lstat().st_mode
        except OSError as exc:
            problems.append(f"{p}: cannot be read ({exc.strerror})")
            return
        if stat.S_ISLNK(mode):
            problems.append(f"{p}: a symbolic link, not followed")
        elif stat.S_ISDIR(mode):
            pass  # a directory with a file-like name; os.walk goes into it
        elif not stat.S_ISREG(mode):
            problems.append(f"{p}: not a regular file (a named pipe, socket or device), not read")
        else:
            out[str(p.resolve())] = p

    def onerror(err: OSError) -> None:
        problems.append(f"{err.filename}: cannot read directory ({err.strerror})")

    for d in directories:
        base = (root / d) if d not in (".", "") else root
        if not base.is_dir():
            continue
        if d in (".", ""):
            for entry in sorted(base.iterdir()):
                consider(entry)
            continue
        for dirpath, dirnames, filenames in os.walk(base, onerror=onerror, followlinks=False):
            dirnames.sort()
            for fn in sorted(filenames):
                consider(Path(dirpath) / fn)
    return sorted(out.values()), problems


# -- MongoDB ---------------------------------------------------------------------------------------
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


def scan_mongodb(
    db: Any, collections: dict[str, str | None], sensitive: set[str], samples: int
) -> dict[str, Any]:
    """Per collection: count, time range, field presence, masked samples (read-only)."""

    def one(name: str, ts: str | None) -> dict[str, Any]:
        coll = db[name]
        out: dict[str, Any] = {"count": coll.count_documents({})}
        if ts and out["count"]:
            lo = coll.find_one({ts: {"$exists": True}}, sort=[(ts, 1)], projection={ts: 1})
            hi = coll.find_one({ts: {"$exists": True}}, sort=[(ts, -1)], projection={ts: 1})
            out["time_field"] = ts
            out["oldest"] = lo[ts].isoformat() if lo and isinstance(lo.get(ts), datetime) else None
            out["newest"] = hi[ts].isoformat() if hi and isinstance(hi.get(ts), datetime) else None
        presence: dict[str, int] = {}
        docs = list(coll.find({}).limit(200))
        for d in docs:
            for k in d:
                presence[k] = presence.get(k, 0) + 1
        out["field_presence"] = (
            {k: round(v / len(docs), 3) for k, v in sorted(presence.items())} if docs else {}
        )
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


# what bson.encode raises for a value BSON cannot hold (a lone surrogate, an integer beyond 64 bits)
_BSON_REFUSES = (UnicodeEncodeError, bson.errors.InvalidDocument, OverflowError)


def _storable(value: Any) -> bool:
    """Whether BSON can hold ``value``."""
    try:
        bson.encode({"v": value})
    except _BSON_REFUSES:
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


# -- the scan --------------------------------------------------------------------------------------
@dataclass
class ScanReport:
    generated_at: str
    root: str | None
    database: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[FileReport] = field(default_factory=list)
    mongodb: dict[str, Any] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    recoverable: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    date_fields: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = REPORT_FORMAT
        d["date_fields"] = sorted(self.date_fields)
        return d


def scan(
    *,
    root: Path | None,
    directories: list[str],
    patterns: list[str],
    db: Any | None,
    collections: dict[str, str | None],
    conversations_collection: str = "conversations",
    sensitive: set[str] | None = None,
    samples: int = 3,
    workers: int = 2,
    date_fields: frozenset[str] = frozenset({"created_at", "updated_at"}),
    keyring: KeyRing | None = None,
    log: Log = _quiet,
    progress: Progress | None = None,
    not_scanned: str | None = None,
) -> ScanReport:
    """Scan the filesystem under ``root`` (if given) and the database (if given).

    Our own backups met on the way (their manifests match ``backup*.json``) are read through
    their manifests when ``keyring`` is given. ``progress`` is told how many bytes of the files
    have been read, about twice a second. ``not_scanned`` is the advice the report gives when
    ``root`` is None (by default: how to scan files too).
    """
    report = ScanReport(
        generated_at=datetime.now(timezone.utc).isoformat(),
        root=str(root) if root else None,
        database=getattr(db, "name", None),
        date_fields=date_fields,
    )
    with tempfile.TemporaryDirectory(prefix="bmc-scan-") as tmp:
        found = _Conversations(Path(tmp))
        if root is not None:
            paths, report.problems = candidate_files(root, directories, patterns)
            # files are numbered in path order (the report's order, and the tie-break between
            # versions) but handed to the workers largest first, so that one huge file does not
            # start last and leave the other workers idle
            paths = sorted(paths, key=str)
            slots: list[FileReport | None] = [None] * len(paths)
            ours = _Spool(Path(tmp) / "ours.jsonl")
            for i, p in enumerate(paths):
                if backup_id_of_manifest(p.name) is not None:  # our own backups, in process
                    slots[i] = scan_archive(p, keyring, ours, i, date_fields)
            ours.close()
            found.load(ours.path)
            todo = sorted(
                (i for i in range(len(paths)) if slots[i] is None),
                key=lambda i: -_size(paths[i]),
            )
            total = sum(_size(paths[i]) for i in todo)
            log(
                f"scanning {len(todo)} file(s) ({total / 1e6:.1f} MB) under {root} "
                f"with {workers} worker(s)"
            )
            tasks = _batches([(str(paths[i]), i) for i in todo], paths)
            spools = [Path(tmp) / f"batch{n}.jsonl" for n in range(len(tasks))]
            # records are folded in as each batch finishes, while the others run
            for results, spool in _run_batches(
                tasks, spools, date_fields, workers, total, progress
            ):
                for i, fr in results:
                    slots[i] = fr
                found.load(spool)
            report.files = [fr for fr in slots if fr is not None]
        if db is not None and collections:
            log(f"scanning MongoDB collections: {', '.join(collections)}")
            report.mongodb = scan_mongodb(db, collections, sensitive or set(), samples)
        if root is None:
            nothing_found = not_scanned or (
                "files were not scanned: scan with --source all (or filesystem) to look for "
                "conversations on disk that MongoDB lacks"
            )
        elif not report.files:
            where = ", ".join(
                f"{d}/" if d not in (".", "") else "the root itself" for d in directories
            )
            nothing_found = (
                f"no file to scan under {root}: the scan looks in {where} for "
                f"{', '.join(patterns)} (and their .gz/.zst copies); point --root at the "
                "directory that holds those folders, or change scanner.directories / "
                "scanner.patterns in backup_config.json"
            )
        else:
            nothing_found = "no conversations found on disk"
        coll = db[conversations_collection] if db is not None else None
        _analyse(report, found, coll, nothing_found)
    return report


def _run_batches(
    tasks: list[list[tuple[str, int]]],
    spools: list[Path],
    date_fields: frozenset[str],
    workers: int,
    total: int,
    progress: Progress | None,
) -> Iterator[tuple[list[tuple[int, FileReport]], Path]]:
    """Each batch's file reports and spool, as batches finish; ``progress`` told meanwhile."""
    parallel = workers > 1 and len(tasks) > 1
    ctx = _mp_context() if parallel else multiprocessing.get_context()
    reporter = _Reporter(progress, ctx.Value("q", 0), total)
    if not parallel:
        _LOCAL.reporter = reporter
        try:
            for t, sp in zip(tasks, spools, strict=True):
                yield scan_files(t, date_fields, str(sp)), sp
        finally:
            _LOCAL.reporter = None
        reporter.tick(final=True)
        return

    def pool_of(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_worker_start, initargs=(reporter.counter,)
        )

    left = dict(zip(map(str, spools), tasks, strict=True))  # batches not reported yet
    try:
        with pool_of(workers) as pool:
            pending = {pool.submit(scan_files, t, date_fields, out): out for out, t in left.items()}
            while pending:
                finished, _ = wait(
                    pending, timeout=_Reporter.INTERVAL_S, return_when=FIRST_COMPLETED
                )
                for fut in finished:
                    out = pending.pop(fut)
                    results = fut.result()
                    del left[out]
                    yield results, Path(out)
                reporter.tick()
    except BrokenProcessPool:
        # a worker died (killed for want of memory, or crashed): the batches it left are read
        # again a file at a time, each in a process of its own, so that only the file that
        # kills its reader is lost, and it is named
        for out, t in left.items():
            for n, item in enumerate(t):
                one = f"{out}.{n}"
                try:
                    with pool_of(1) as alone:
                        yield alone.submit(scan_files, [item], date_fields, one).result(), Path(one)
                except BrokenProcessPool:
                    Path(one).unlink(missing_ok=True)  # whatever it wrote before it died
                    lost = FileReport(path=item[0], size=_size(Path(item[0])), error=_READER_DIED)
                    yield [(item[1], lost)], Path(one)
    reporter.tick(final=True)


_READER_DIED = (
    "the process reading this file stopped before it finished (killed, perhaps for want of "
    "memory, or crashed); nothing of it is in this report"
)


_BATCH_BYTES = 8 << 20


def _batches(items: list[tuple[str, int]], paths: list[Path]) -> list[list[tuple[str, int]]]:
    """Files (largest first) grouped into tasks of about ``_BATCH_BYTES``: few hand-offs to the
    workers for thousands of small files, and a big file alone in its task."""
    tasks: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    size = 0
    for item in items:
        n = _size(paths[item[1]])
        if current and size + n > _BATCH_BYTES:
            tasks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        tasks.append(current)
    return tasks


def scan_files(
    batch: list[tuple[str, int]], date_fields: frozenset[str], spool_path: str
) -> list[tuple[int, FileReport]]:
    """:func:`scan_file` for a batch of (path, number), into one spool; run in a worker."""
    spool = _Spool(Path(spool_path))
    try:  # in file-number order, as the spool's places must be
        return [(i, scan_file(path, date_fields, spool, i)) for path, i in sorted(batch, key=_nth)]
    finally:
        spool.close()


def _nth(item: tuple[str, int]) -> int:
    return item[1]


def _mp_context() -> multiprocessing.context.BaseContext:
    """How to start the workers: from a fork server when this process runs other threads.

    A scan may run in a threaded process (the API's thread pool, a Dagster step); forking such a
    process copies locks other threads may hold, which can hang the child, so workers then come
    from a clean server process (Linux). A single-threaded process (the command line, a script)
    forks directly: no such hazard, and no re-import of an unguarded ``__main__`` script.
    """
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() > 1 and "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_NO_TIME = float("-inf")  # a copy without any time ranks below every dated one
REPORT_FORMAT = "bmc-recovery-report/3"  # /3: hashes of the scan form (dates as UTC text)
PLACES_LISTED = 20  # places listed per duplicated conversation (all are counted)
_KEY_BATCH = 1000  # conversations looked up in MongoDB at a time


class _Conversations:
    """What the analysis needs of each distinct conversation, folded in record by record.

    A record, as the workers write it, one JSON array per line, is
    ``[key, copies, versions, places, newest]``: how many copies, which versions (content
    hashes), the first places in path order (at most ``PLACES_LISTED`` ``[file, index]``
    pairs) and the newest copy (``[session, hash, epoch, file, index]``). Records of one key are
    folded into the first, so the state is the record itself: a conversation seen once costs
    the parsed line and nothing more. They are folded in as batches finish.

    Memory is bounded: past ``SPILL_KEYS`` distinct conversations the fold is written to a
    temporary file sorted by key and started afresh, and :meth:`groups` merges those files
    (a streaming k-way merge). So a scan of one huge export of distinct conversations holds no
    more than a pile of copies of a few; only the report's own lists grow with what they list.
    """

    SPILL_KEYS = 50_000

    def __init__(self, tmp_dir: Path) -> None:
        self.by_key: dict[str, list[Any]] = {}
        self.count = 0
        self._tmp = tmp_dir
        self._runs: list[Path] = []

    def load(self, spool: Path) -> None:
        if not spool.exists():
            return
        by_key = self.by_key
        with spool.open("rb") as fh:
            for line in fh:
                record = _load_line(line)
                self.count += record[1]
                _fold_record(by_key, record)
                if len(by_key) >= self.SPILL_KEYS:
                    self._spill()
        spool.unlink()

    def _spill(self) -> None:
        path = self._tmp / f"found{len(self._runs)}.jsonl"
        with path.open("wb") as fh:
            for key in sorted(self.by_key):
                record = self.by_key[key]
                record[3].sort()  # places ascend in every record
                fh.write(_dump_line(record))
        self._runs.append(path)
        self.by_key.clear()

    def groups(self) -> Iterator[list[Any]]:
        """The folded record of every distinct conversation, in key order."""
        if not self._runs:
            for key in sorted(self.by_key):
                yield self.by_key[key]
            return
        self._spill()
        merged = heapq.merge(*(_records(run) for run in self._runs), key=_first)
        for key, records in itertools.groupby(merged, key=_first):
            one: dict[str, list[Any]] = {}
            for record in records:
                _fold_record(one, record)
            yield one[key]


def _first(record: list[Any]) -> Any:
    return record[0]


def _records(path: Path) -> Iterator[list[Any]]:
    with path.open("rb") as fh:
        for line in fh:
            yield _load_line(line)


def _dump_line(record: list[Any]) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except orjson.JSONEncodeError:  # a lone surrogate in a session id
        return json.dumps(record).encode() + b"\n"


def _load_line(line: bytes) -> list[Any]:
    """A line of :func:`_dump_line`; the standard library reads what orjson refuses (a lone
    surrogate, escaped as ``\\ud800``)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = json.loads(line)
    assert isinstance(record, list)
    return record


def _rank(newest: list[Any]) -> tuple[float, int, int]:
    """Which copy is newer: by time, then the later place (no two copies share a place)."""
    t = newest[2]
    return (t if t is not None else _NO_TIME, newest[3], newest[4])


def _fold_record(by_key: dict[str, list[Any]], record: list[Any]) -> None:
    """Fold one record (see :class:`_Conversations`) into the record ``by_key`` has for its key."""
    g = by_key.get(record[0])
    if g is None:
        by_key[record[0]] = record
        return
    g[1] += record[1]
    versions = g[2]
    if len(versions) + len(record[2]) > 16:  # many versions: no quadratic membership tests
        g[2] = sorted(set(versions).union(record[2]))
    else:
        for v in record[2]:
            if v not in versions:
                versions.append(v)
    places = g[3]
    # a full list is sorted; places of a record ascend, so one that starts after the last place
    # listed has nothing to add
    if len(places) < PLACES_LISTED or record[3][0] < places[-1]:
        places.extend(record[3])
        if len(places) >= PLACES_LISTED:
            places.sort()
            del places[PLACES_LISTED:]
    if _rank(record[4]) > _rank(g[4]):
        g[4] = record[4]


def _analyse(
    report: ScanReport, found: _Conversations, coll: Any | None, nothing_found: str
) -> None:
    """Duplicates, conflicts, what MongoDB lacks, the summary and the recommendations.

    ``nothing_found`` is the advice when a scan found nothing on disk: why, and what to do.
    """
    paths = [f.path for f in report.files]
    recoverable_per_file: dict[str, int] = {}

    def settle(batch: list[list[Any]]) -> None:
        """Report a batch of distinct conversations; MongoDB is asked about them all at once.

        Text (places, times) is made only for what is reported: most conversations of a large
        scan are neither duplicated nor conflicting.
        """
        have = existing_keys(coll, [r[0] for r in batch]) if coll is not None else set()
        for key, copies, versions, places, (session, h, t, file_no, idx) in batch:
            if copies > 1:
                listed = [f"{paths[f]}#{i}" for f, i in sorted(places)]
                report.duplicates.append({"key": key, "copies": copies, "places": listed})
            if len(versions) > 1:
                report.conflicts.append(
                    {
                        "key": key,
                        "versions": len(versions),
                        "newest": f"{paths[file_no]}#{idx}",
                        "newest_time": _iso(t),
                    }
                )
            if coll is not None and key not in have:
                path = paths[file_no]
                report.recoverable.append(
                    {"key": key, "session_id": session, "path": path, "index": idx, "hash": h}
                )
                recoverable_per_file[path] = recoverable_per_file.get(path, 0) + 1

    unique = 0
    batch: list[list[Any]] = []
    for group in found.groups():
        batch.append(group)
        if len(batch) == _KEY_BATCH:
            settle(batch)
            unique += len(batch)
            batch = []
    settle(batch)
    unique += len(batch)
    for fr in report.files:
        fr.recoverable = recoverable_per_file.get(fr.path, 0)
    errors = [f for f in report.files if f.error]
    report.summary = {
        "files_scanned": len(report.files),
        "files_with_conversations": sum(1 for f in report.files if f.conversations),
        "conversations_found": found.count,
        "unique_conversations": unique,
        "duplicates": len(report.duplicates),
        "conflicts": len(report.conflicts),
        "recoverable": len(report.recoverable) if coll is not None else None,
        "files_with_errors": len(errors),
        "salvaged_files": sum(1 for f in errors if f.salvaged),
    }
    recs = []
    if report.recoverable:
        recs.append(
            f"{len(report.recoverable)} conversation(s) on disk are missing from MongoDB: preview with "
            f"'bmc-backup recover --from-scan {REPORT_PLACEHOLDER} --dry-run', then run it without --dry-run"
        )
    if report.conflicts:
        recs.append(
            f"{len(report.conflicts)} conversation(s) exist in several versions: recover takes the newest; "
            "use --strategy merge to combine them with what MongoDB has"
        )
    if errors:
        recs.append(
            f"{len(errors)} file(s) could not be read completely (see 'files'); conversations before "
            "the damage were kept where possible. Keep the originals until recovery is verified."
        )
    if coll is None and unique:
        recs.append(
            f"MongoDB was not consulted: scan with --source all to learn which of the "
            f"{unique} conversation(s) found on disk it lacks"
        )
    if not recs:
        recs.append(
            "nothing to recover: every conversation found on disk is in MongoDB"
            if unique
            else nothing_found
        )
    report.recommendations = recs


def markdown(report: ScanReport) -> str:
    """The report for people."""
    s = report.summary
    lines = [
        "# Recovery scan",
        "",
        f"Generated {report.generated_at}; root `{report.root}`; database `{report.database}`.",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in s.items()],
        "",
        "## Recommendations",
        "",
        *[f"- {r}" for r in report.recommendations],
        "",
    ]
    if report.mongodb:
        lines += [
            "## MongoDB",
            "",
            "| collection | documents | oldest | newest |",
            "|---|---|---|---|",
        ]
        for name, c in report.mongodb.items():
            lines.append(
                f"| {name} | {c['count']} | {c.get('oldest') or ''} | {c.get('newest') or ''} |"
            )
        lines.append("")
    if report.files:
        lines += [
            "## Files",
            "",
            "| path | size | shape | conversations | recoverable | error |",
            "|---|---|---|---|---|---|",
        ]
        for f in report.files:
            err = (f.error or "") + (
                f" (at byte/char {f.error_offset})" if f.error_offset is not None else ""
            )
            if f.salvaged:
                err += "; earlier conversations kept"
            lines.append(
                f"| `{f.path}` | {f.size} | {f.shape} {f.compressed} | {f.conversations} | {f.recoverable} | {err} |"
            )
        lines.append("")
    if report.conflicts:
        lines += ["## Conflicting versions", ""]
        lines += [
            f"- `{c['key']}`: {c['versions']} versions; newest in `{c['newest']}`"
            for c in report.conflicts[:200]
        ]
        lines.append("")
    if report.problems:
        lines += ["## Not scanned", "", *[f"- {p}" for p in report.problems], ""]
    return "\n".join(lines)


def write_reports(report: ScanReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    j = out_dir / f"recovery_report_{stamp}.json"
    m = out_dir / f"recovery_report_{stamp}.md"
    report.recommendations = [r.replace(REPORT_PLACEHOLDER, str(j)) for r in report.recommendations]
    # a lone surrogate (a broken session id) becomes the six characters \ud800: in JSON text,
    # where it can only be inside a string, that is its own escape, so the report reads back
    j.write_text(
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str),
        encoding="utf-8",
        errors="backslashreplace",
    )
    m.write_text(markdown(report), encoding="utf-8", errors="backslashreplace")
    return j, m


class UnstorableError(BmcError):
    """A recoverable conversation that BSON cannot hold; recovery stops before writing."""


def recoverable_documents(
    report_path: Path, keyring: KeyRing | None = None, missing: list[str] | None = None
) -> Iterator[bytes]:
    """The newest version of each recoverable conversation of a saved report, as BSON.

    A conversation without ``_id`` gets one derived from its session id, so recovering twice
    cannot create two copies. One that BSON cannot hold (a lone surrogate, an integer beyond 64
    bits) stops the recovery with its place named; the restore reads every document before it
    writes any, so nothing has been written then. Entries of the report that are not found as
    they were scanned (the file changed, is gone or cannot be read now) are skipped and, when
    ``missing`` is given, listed there as ``path#index: why``.
    """
    try:
        data = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BmcError(f"{report_path}: cannot read the scan report: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise BmcError(
            f"{report_path} is not a scan report of this version (format "
            f"{data.get('format') if isinstance(data, dict) else None!r}, expected "
            f"{REPORT_FORMAT!r}); scan again with 'bmc-backup scan' and recover from the new report"
        )
    date_fields = frozenset(data.get("date_fields", []))
    wanted: dict[str, dict[int, str]] = {}
    for r in data.get("recoverable", []):
        wanted.setdefault(r["path"], {})[int(r["index"])] = r["hash"]
    for path, indexes in wanted.items():
        found: set[int] = set()
        why = "not found as scanned: the file changed since the scan"
        try:
            for i, conv in enumerate(conversations_of(Path(path), date_fields, keyring)):
                if i in indexes and content_hash(conv) == indexes[i]:
                    found.add(i)
                    yield _storable_bson(to_document(conv, date_fields), path, i, report_path)
        except UnstorableError:
            raise
        except (OSError, ValueError, EOFError, zstandard.ZstdError, BmcError) as exc:
            why = f"cannot be read now: {exc}"
        if missing is not None:
            missing.extend(f"{path}#{i}: {why}" for i in sorted(set(indexes) - found))


def _storable_bson(conv: dict[str, Any], path: str, i: int, report_path: Path) -> bytes:
    try:
        if "_id" not in conv:
            session = ("session_id:" + conv["session_id"]).encode()
            conv = {"_id": bson.ObjectId(hashlib.sha256(session).digest()[:12]), **conv}
        return bson.encode(conv)
    except _BSON_REFUSES as exc:
        raise UnstorableError(
            f"{path}#{i} (session {conv['session_id']!r}) cannot be stored in MongoDB: {exc}; "
            f"nothing was written. Remove its entry from 'recoverable' in {report_path} (or "
            "mend the file) and recover again"
        ) from None


__all__ = ["ScanReport", "markdown", "recoverable_documents", "scan", "write_reports"]


SOURCES = ("all", "mongodb", "filesystem")


def _time_field(settings: Settings, name: str) -> str | None:
    """The field a collection's date range is read from: its ``timestamp_field``, else its first
    required field of type date (``analytics`` has ``timestamp`` and no updates)."""
    c = settings.collection(name)
    dates = (f for f, t in c.required_fields.items() if t == "date")
    return c.timestamp_field or next(dates, None)


def scan_settings(
    settings: Settings,
    *,
    source: str = "all",
    collection: str | None = None,
    root: Path | None = None,
    db: Any | None = None,
    keyring: KeyRing | None = None,
    log: Log = _quiet,
    progress: Progress | None = None,
) -> ScanReport:
    """A scan as configured in ``backup_config.json``; the command line, Dagster and the API share it.

    ``db`` is the database handle for the MongoDB part (required unless ``source`` is
    ``filesystem``); ``root`` defaults to ``files.root``.
    """
    if source not in SOURCES:
        raise BmcError(f"unknown scan source {source!r}: use {', '.join(SOURCES)}")
    sc = settings.scanner
    files = source in ("filesystem", "all")
    missing_root = None
    if files and root is not None and not root.is_dir():
        raise BmcError(f"{root} is not a directory; give the directory to scan")
    if files and root is None and not settings.files_root.is_dir():
        # the configured root is gone: scan what there is, and say so in the report
        missing_root, files = settings.files_root, False
    root = root or settings.files_root
    not_scanned = None
    if missing_root is not None:
        not_scanned = (
            f"the files root {missing_root} (files.root) does not exist, so no files were "
            "scanned; set files.root or BMC_FILES_ROOT, or scan a directory with --root"
        )
    names = [collection] if collection else list(settings.collections)
    conv = settings.collection("conversations")
    # the chatbot's own date fields always, whatever the configuration says of them: a copy that
    # reads them as text would otherwise never match one that reads them as dates
    date_fields = {"created_at", "updated_at"}
    date_fields.update(n for n, t in conv.required_fields.items() if t == "date")
    if conv.timestamp_field:
        date_fields.add(conv.timestamp_field)
    report = scan(
        root=root if files else None,
        directories=sc.directories,
        patterns=sc.patterns,
        db=db if source in ("mongodb", "all") else None,
        collections={n: _time_field(settings, n) for n in names},
        sensitive=set(sc.sensitive_fields),
        samples=sc.samples,
        workers=sc.workers,
        date_fields=frozenset(date_fields),
        keyring=keyring,
        log=log,
        progress=progress,
        not_scanned=not_scanned,
    )
    if not_scanned is not None:
        report.problems.insert(0, not_scanned)
    return report
