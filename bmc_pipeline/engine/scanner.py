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
import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import bson
import bson.errors
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
    """Extended JSON to BSON types, for the objects that can be Extended JSON (a ``$`` key)."""
    for k in obj:
        if k.startswith("$"):
            return json_util.object_hook(obj)
    return obj


_DECODER = json.JSONDecoder(object_hook=_ejson_hook)
_PLAIN = json.JSONDecoder()  # for text with no '"$': no Python call per object


def _decode(text: str) -> Any:
    return (_DECODER if '"$' in text else _PLAIN).decode(text)


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
    """The identity a conversation is matched by: its ``_id`` if it has one, else its session."""
    if "_id" in conv:
        return "_id:" + str(
            json_util.dumps(conv["_id"], json_options=json_util.CANONICAL_JSON_OPTIONS)
        )
    return "session_id:" + str(conv["session_id"])


def content_hash(conv: dict[str, Any]) -> str:
    """Identifies a version of a conversation: SHA-256 of its BSON encoding (fast, in C)."""
    try:
        data = bson.encode(conv)
    except (OverflowError, bson.errors.InvalidDocument):  # e.g. an integer beyond 64 bits
        data = json_util.dumps(conv, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def conversation_time(conv: dict[str, Any]) -> str | None:
    """``updated_at``, else the last message's ``timestamp``, as ISO text (for "which is newer")."""
    t = conv.get("updated_at")
    if not isinstance(t, datetime):
        times: list[datetime] = [
            m["timestamp"]
            for m in conv["messages"]
            if isinstance(m, dict) and isinstance(m.get("timestamp"), datetime)
        ]
        t = max(times) if times else None
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()
    return None


_HEX24 = frozenset("0123456789abcdef")


def _as_date(v: Any) -> Any:
    if isinstance(v, str) and len(v) >= 10 and v[4] == "-":
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return v
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return v


def normalize(conv: dict[str, Any], date_fields: frozenset[str]) -> dict[str, Any]:
    """Undo what ``json.dumps(default=str)`` did to a conversation, so it matches MongoDB's.

    A 24-hex-digit string ``_id`` becomes an ObjectId; ISO-8601 text in ``date_fields`` and in
    the messages' ``timestamp`` becomes a date. Nothing else is changed.
    """
    out = dict(conv)
    i = out.get("_id")
    if isinstance(i, str) and len(i) == 24 and set(i) <= _HEX24:
        out["_id"] = bson.ObjectId(i)
    for f in date_fields:
        if f in out:
            out[f] = _as_date(out[f])
    out["messages"] = [
        {**m, "timestamp": _as_date(m["timestamp"])}
        if isinstance(m, dict) and "timestamp" in m
        else m
        for m in out["messages"]
    ]
    return out


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


@dataclass
class Found:
    """One conversation as found in one place of one file."""

    key: str
    session_id: str
    hash: str
    time: str | None
    path: str
    index: int  # position among the conversations of that file


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
def _open(path: Path) -> tuple[BinaryIO, str]:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb"), "gzip"  # type: ignore[return-value]
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(path.open("rb")), "zstd"
    return path.open("rb"), ""


class _Text:
    """Decoded text of a binary stream, in chunks, with the byte offset of each chunk's start."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_read = 0

    def read(self) -> str:
        data = self.raw.read(CHUNK)
        if data and b"\x00" in data:
            raise ValueError(
                f"binary content (a NUL byte near byte {self.bytes_read + data.index(0)})"
            )
        try:
            text: str = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise ValueError(f"invalid UTF-8 at byte {self.bytes_read + exc.start}") from None
        self.bytes_read += len(data)
        return text


def _values(path: Path, report: FileReport) -> Iterator[Any]:
    """The JSON values of a file: array elements, NDJSON lines, or the one whole value."""
    fh, report.compressed = _open(path)
    with fh:
        text = _Text(fh)
        buf = text.read()
        consumed = 0  # characters of the file before ``buf``
        start = len(buf) - len(buf.lstrip())
        if not buf.strip():
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


def _looks_like_ndjson(buf: str) -> bool:
    lines = [ln for ln in buf.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
    except json.JSONDecodeError:
        return False
    return True


def _array_items(text: _Text, buf: str, pos: int, report: FileReport) -> Iterator[Any]:
    offset = 0  # characters dropped from the front of buf
    eof = False
    while True:
        # skip white space and the comma between elements
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
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
        while True:
            try:
                value, end = _PLAIN.raw_decode(buf, pos)
                if '"$' in buf[pos:end]:  # Extended JSON inside: decode this element again with it
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
    path_text: str, date_fields: frozenset[str] = frozenset()
) -> tuple[FileReport, list[Found]]:
    """Everything one file holds (run in worker processes; never raises for a bad file)."""
    path = Path(path_text)
    report = FileReport(path=path_text, size=path.stat().st_size if path.exists() else 0)
    found: list[Found] = []
    try:
        for value in _values(path, report):
            for raw_conv in find_conversations(value):
                conv = normalize(raw_conv, date_fields)
                found.append(
                    Found(
                        key=conversation_key(conv),
                        session_id=conv["session_id"],
                        hash=content_hash(conv),
                        time=conversation_time(conv),
                        path=path_text,
                        index=len(found),
                    )
                )
    except (OSError, ValueError, EOFError, zstandard.ZstdError, RecursionError) as exc:
        report.error = str(exc) if not isinstance(exc, RecursionError) else "JSON nested too deeply"
        report.salvaged = bool(found)
    report.conversations = len(found)
    return report, found


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


def scan_archive(path: Path, keyring: KeyRing | None) -> tuple[FileReport, list[Found]]:
    """One of our backup manifests: the conversations of its archive (needs the key)."""
    report = FileReport(path=str(path), size=path.stat().st_size, shape="bmc_pipeline backup")
    found: list[Found] = []
    if keyring is None:
        report.error = "a bmc_pipeline backup: configure the backup key to look inside it"
        return report, found
    try:
        for conv in archive_conversations(path, keyring):
            found.append(
                Found(
                    conversation_key(conv),
                    conv["session_id"],
                    content_hash(conv),
                    conversation_time(conv),
                    str(path),
                    len(found),
                )
            )
    except (BmcError, OSError) as exc:
        report.error = str(exc)
        report.salvaged = bool(found)
    report.conversations = len(found)
    return report, found


def conversations_of(
    path: Path, date_fields: frozenset[str], keyring: KeyRing | None = None
) -> Iterator[dict[str, Any]]:
    """The conversations of a file, normalized and numbered as the scan did (for recovery)."""
    if backup_id_of_manifest(path.name) is not None and keyring is not None:
        yield from archive_conversations(path, keyring)
        return
    report = FileReport(path=str(path), size=0)
    for value in _values(path, report):
        for conv in find_conversations(value):
            yield normalize(conv, date_fields)


# -- walking the tree ------------------------------------------------------------------------------
def candidate_files(
    root: Path, directories: list[str], patterns: list[str]
) -> tuple[list[Path], list[str]]:
    """Files to scan, and problems met on the way (unreadable directories, links not followed)."""
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

    def match(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pat) for pat in names)

    for d in directories:
        base = (root / d) if d not in (".", "") else root
        if not base.is_dir():
            continue
        if d in (".", ""):
            for entry in sorted(base.iterdir()):
                if entry.is_file() and not entry.is_symlink() and match(entry.name):
                    out[str(entry.resolve())] = entry
            continue

        def onerror(err: OSError) -> None:
            problems.append(f"{err.filename}: cannot read directory ({err.strerror})")

        for dirpath, dirnames, filenames in os.walk(base, onerror=onerror, followlinks=False):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if p.is_symlink():
                    if match(fn):
                        problems.append(f"{p}: a symbolic link, not followed")
                    continue
                if match(fn):
                    out[str(p.resolve())] = p
    return sorted(out.values()), problems


# -- MongoDB ---------------------------------------------------------------------------------------
def mask(value: Any, sensitive: set[str], key: str = "") -> Any:
    """Personal data masked: keeps the shape and the last two characters."""
    if isinstance(value, dict):
        return {k: mask(v, sensitive, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, sensitive, key) for v in value]
    if key in sensitive and isinstance(value, str):
        if "@" in value:
            user, _, domain = value.partition("@")
            return user[:1] + "***@" + domain
        return "*" * max(0, len(value) - 2) + value[-2:]
    return value


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


def existing_keys(coll: Any, keys: list[str]) -> set[str]:
    """Which of these conversation keys MongoDB has."""
    ids = [json_util.loads(k[4:]) for k in keys if k.startswith("_id:")]
    sessions = [k[len("session_id:") :] for k in keys if k.startswith("session_id:")]
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
        d["format"] = "bmc-recovery-report/1"
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
) -> ScanReport:
    """Scan the filesystem under ``root`` (if given) and the database (if given).

    Our own backups met on the way (their manifests match ``backup*.json``) are read through
    their manifests when ``keyring`` is given.
    """
    report = ScanReport(
        generated_at=datetime.now(timezone.utc).isoformat(),
        root=str(root) if root else None,
        database=getattr(db, "name", None),
        date_fields=date_fields,
    )
    found: list[Found] = []
    if root is not None:
        paths, report.problems = candidate_files(root, directories, patterns)
        ours = [p for p in paths if backup_id_of_manifest(p.name) is not None]
        paths = [p for p in paths if backup_id_of_manifest(p.name) is None]
        for p in ours:
            fr, fl = scan_archive(p, keyring)
            report.files.append(fr)
            found.extend(fl)
        log(f"scanning {len(paths)} files under {root} with {workers} worker(s)")
        results: Iterator[tuple[FileReport, list[Found]]]
        if workers > 1 and len(paths) > 1:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(
                scan_file, [str(p) for p in paths], [date_fields] * len(paths), chunksize=8
            )
        else:
            pool = None
            results = (scan_file(str(p), date_fields) for p in paths)
        try:
            for i, (fr, fl) in enumerate(results, 1):
                report.files.append(fr)
                found.extend(fl)
                if i % 500 == 0:
                    log(f"{i}/{len(paths)} files scanned")
        finally:
            if pool is not None:
                pool.shutdown()
    if db is not None and collections:
        log(f"scanning MongoDB collections: {', '.join(collections)}")
        report.mongodb = scan_mongodb(db, collections, sensitive or set(), samples)
    _analyse(report, found, db[conversations_collection] if db is not None else None)
    return report


def _analyse(report: ScanReport, found: list[Found], coll: Any | None) -> None:
    by_key: dict[str, list[Found]] = {}
    for f in found:
        by_key.setdefault(f.key, []).append(f)
    have = existing_keys(coll, list(by_key)) if coll is not None else set()
    recoverable_per_file: dict[str, int] = {}
    for key, places in sorted(by_key.items()):
        versions = {p.hash for p in places}
        newest = max(places, key=lambda p: (p.time or "", p.path, p.index))
        if len(places) > 1:
            report.duplicates.append(
                {"key": key, "places": [f"{p.path}#{p.index}" for p in places]}
            )
        if len(versions) > 1:
            report.conflicts.append(
                {
                    "key": key,
                    "versions": len(versions),
                    "newest": f"{newest.path}#{newest.index}",
                    "newest_time": newest.time,
                }
            )
        if coll is not None and key not in have:
            report.recoverable.append(
                {
                    "key": key,
                    "session_id": newest.session_id,
                    "path": newest.path,
                    "index": newest.index,
                    "hash": newest.hash,
                }
            )
            recoverable_per_file[newest.path] = recoverable_per_file.get(newest.path, 0) + 1
    for fr in report.files:
        fr.recoverable = recoverable_per_file.get(fr.path, 0)
    errors = [f for f in report.files if f.error]
    report.summary = {
        "files_scanned": len(report.files),
        "files_with_conversations": sum(1 for f in report.files if f.conversations),
        "conversations_found": len(found),
        "unique_conversations": len(by_key),
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
    if coll is None and by_key:
        recs.append(
            f"MongoDB was not consulted: scan with --source all to learn which of the "
            f"{len(by_key)} conversation(s) found on disk it lacks"
        )
    if not recs:
        recs.append(
            "nothing to recover: every conversation found on disk is in MongoDB"
            if by_key
            else "no conversations found on disk"
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
    j.write_text(
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    m.write_text(markdown(report), encoding="utf-8")
    return j, m


def recoverable_documents(report_path: Path, keyring: KeyRing | None = None) -> Iterator[bytes]:
    """The newest version of each recoverable conversation of a saved report, as BSON.

    A conversation without ``_id`` gets one derived from its session id, so recovering twice
    cannot create two copies.
    """
    try:
        data = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BmcError(f"{report_path}: cannot read the scan report: {exc}") from None
    date_fields = frozenset(data.get("date_fields", []))
    wanted: dict[str, dict[int, str]] = {}
    for r in data.get("recoverable", []):
        wanted.setdefault(r["path"], {})[int(r["index"])] = r["hash"]
    for path, indexes in wanted.items():
        for i, conv in enumerate(conversations_of(Path(path), date_fields, keyring)):
            if i in indexes and content_hash(conv) == indexes[i]:
                if "_id" not in conv:
                    digest = hashlib.sha256(("session_id:" + conv["session_id"]).encode()).digest()
                    conv = {"_id": bson.ObjectId(digest[:12]), **conv}
                yield bson.encode(conv)


__all__ = ["ScanReport", "markdown", "recoverable_documents", "scan", "write_reports"]


SOURCES = ("all", "mongodb", "filesystem")


def scan_settings(
    settings: Settings,
    *,
    source: str = "all",
    collection: str | None = None,
    root: Path | None = None,
    db: Any | None = None,
    keyring: KeyRing | None = None,
    log: Log = _quiet,
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
    names = [collection] if collection else list(settings.collections)
    conv = settings.collection("conversations")
    date_fields = {n for n, t in conv.required_fields.items() if t == "date"}
    if conv.timestamp_field:
        date_fields.add(conv.timestamp_field)
    report = scan(
        root=root if files else None,
        directories=sc.directories,
        patterns=sc.patterns,
        db=db if source in ("mongodb", "all") else None,
        collections={n: settings.collection(n).timestamp_field for n in names},
        sensitive=set(sc.sensitive_fields),
        samples=sc.samples,
        workers=sc.workers,
        date_fields=frozenset(date_fields),
        keyring=keyring,
        log=log,
    )
    if missing_root is not None:
        report.problems.insert(
            0,
            f"the files root {missing_root} (files.root) does not exist, so no files were "
            "scanned; set files.root or BMC_FILES_ROOT, or scan a directory with --root",
        )
    return report
