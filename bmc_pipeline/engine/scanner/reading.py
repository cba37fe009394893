"""Reading one file as a stream: plain or compressed, a JSON array, NDJSON, or any other value.

A JSON array is parsed a run of elements at a time, so memory is bounded by the largest element;
when it is cut short or damaged, the elements before the damage are kept and the offset of the
damage is reported. Compressed copies that are cut short give up what they hold before the cut.
"""

from __future__ import annotations

import codecs
import gc
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import orjson
import zstandard

from bmc_pipeline.engine.scanner.fold import Spool
from bmc_pipeline.engine.scanner.form import (
    EJSON_DECODER,
    PLAIN_DECODER,
    canonical,
    decode_json,
    find_conversations,
    is_conversation,
    may_hold_ejson,
)
from bmc_pipeline.engine.scanner.progress import count_read

CHUNK = 1 << 20


MAX_WHOLE_FILE = 512 << 20  # a non-array JSON file larger than this is reported, not parsed


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
        count_read(at - self._counted)
        self._counted = at
        return text


def json_values(path: Path, report: FileReport) -> Iterator[Any]:
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
                value = decode_json(buf)
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
                EJSON_DECODER.decode("[" + piece + "]")
                if may_hold_ejson(piece)
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
                value, end = PLAIN_DECODER.raw_decode(buf, pos)
                # Extended JSON inside: decode this element again with it
                if may_hold_ejson(buf[pos:end]):
                    value = EJSON_DECODER.decode(buf[pos:end])
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
                    yield decode_json(line)
                except json.JSONDecodeError as exc:
                    if report.error is None:
                        report.error = f"invalid JSON line: {exc.msg}"
                        report.error_offset = offset + exc.pos
                        report.salvaged = True
            offset += len(line) + 1
        if not more:
            return


def scan_file(
    path_text: str, date_fields: frozenset[str], spool: Spool, file_no: int = 0
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
        for value in json_values(path, report):
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
