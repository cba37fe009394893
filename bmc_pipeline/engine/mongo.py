"""The few database operations the engine needs, over pymongo and (for in-process tests) mongomock.

pymongo hands out raw BSON batches (``find_raw_batches``) and accepts raw documents
(``RawBSONDocument``), which keeps Python-object decoding off the hot path. mongomock has neither, so
for it the same functions encode and decode; the bytes the engine sees are the same either way.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

import bson
import pymongo
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    NetworkTimeout,
    PyMongoError,
)

from bmc_pipeline.engine.errors import DatabaseError

T = TypeVar("T")
# Errors after which repeating the whole operation can succeed: the server went away or is busy.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
)


_MOCK_CLIENTS: dict[str, Any] = {}


_USERINFO = re.compile(r"^(?P<scheme>mongodb(?:\+srv)?://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


def split_password(uri: str) -> tuple[str, str | None]:
    """``uri`` without its password, and the password (decoded), or None if it has none.

    Dagster shows a resource's configuration to everyone who opens its UI: the URI goes there
    without the password, which reaches the run through an environment variable instead.
    """
    m = _USERINFO.match(uri)
    if m is None:
        return uri, None
    rest = uri[m.end() :]
    return f"{m['scheme']}{m['user']}@{rest}", unquote(m["password"])


def masked_uri(uri: str) -> str:
    """``uri`` as it may be shown or logged: the password replaced by ``****``."""
    m = _USERINFO.match(uri)
    return uri if m is None else f"{m['scheme']}{m['user']}:****@{uri[m.end() :]}"


def connect(
    uri: str,
    *,
    server_selection_timeout_ms: int = 5000,
    socket_timeout_ms: int = 60_000,
    password: str | None = None,
) -> Any:
    """A client for ``uri`` (with ``password`` if the URI holds none); ``mongomock://`` gives an
    in-process mongomock client."""
    if uri.startswith("mongomock://"):
        import mongomock

        # One client per URI for the life of the process, so that every part of one in-process
        # run (seeding, Dagster steps, verification) sees the same data.
        if uri not in _MOCK_CLIENTS:
            _MOCK_CLIENTS[uri] = mongomock.MongoClient(tz_aware=True)
        return _MOCK_CLIENTS[uri]
    extra: dict[str, Any] = {"password": password} if password else {}
    return pymongo.MongoClient(
        uri,
        **extra,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        socketTimeoutMS=socket_timeout_ms,
        connectTimeoutMS=min(server_selection_timeout_ms, 10_000),
        tz_aware=True,
        appname="bmc_pipeline",
    )


def is_mock(obj: Any) -> bool:
    return type(obj).__module__.startswith("mongomock")


# The embedded FerretDB 1.24 stops answering, and takes no more writes until restarted, when one
# bulk_write holds 100 or more ReplaceOne upserts (99 measured fine): replacements go to it in
# batches of half that.
FERRETDB_REPLACE_BATCH = 50
_FERRETDB: dict[int, bool] = {}


def is_ferretdb(coll: Any) -> bool:
    """Whether the server behind ``coll`` is FerretDB (its buildInfo says so); asked once."""
    if is_mock(coll):
        return False
    client = coll.database.client
    key = id(client)
    if key not in _FERRETDB:
        try:
            info = client.admin.command("buildInfo")
        except PyMongoError:
            return False  # not known yet: ask again next time
        _FERRETDB[key] = "ferretdbVersion" in info
    return _FERRETDB[key]


def replace_batch(coll: Any, wanted: int) -> int:
    """How many replacements one bulk_write may carry to this server."""
    return min(wanted, FERRETDB_REPLACE_BATCH) if is_ferretdb(coll) else wanted


def raw_batches(
    coll: Any,
    query: dict[str, Any] | None = None,
    projection: dict[str, Any] | None = None,
    *,
    batch_size: int = 1000,
) -> Iterator[bytes]:
    """Matching documents as buffers of concatenated raw BSON, one buffer per server batch."""
    if not is_mock(coll):
        yield from coll.find_raw_batches(query or {}, projection, batch_size=batch_size)
        return
    buf: list[bytes] = []
    for doc in coll.find(query or {}, projection):
        buf.append(bson.encode(doc))
        if len(buf) >= batch_size:
            yield b"".join(buf)
            buf = []
    if buf:
        yield b"".join(buf)


def insert_raw(coll: Any, docs: Sequence[bytes]) -> int:
    """Insert raw BSON documents unordered; returns how many were inserted."""
    if not docs:
        return 0
    if is_mock(coll):
        coll.insert_many([bson.decode(d) for d in docs], ordered=False)
    else:
        coll.insert_many([RawBSONDocument(d) for d in docs], ordered=False)
    return len(docs)


def collection_metadata(db: Any, name: str) -> dict[str, Any]:
    """Options and indexes, as mongodump's ``metadata.json`` holds them (Extended JSON)."""
    options: dict[str, Any] = {}
    indexes: list[Any] = []
    try:
        for info in db.list_collections(filter={"name": name}):
            options = dict(info.get("options", {}))
        indexes = [dict(ix) for ix in db[name].list_indexes()]
    except (NotImplementedError, AttributeError, TypeError):
        pass  # mongomock lacks parts of this; the documents are what matter there
    as_json = json_util.dumps(
        {"options": options, "indexes": indexes}, json_options=json_util.CANONICAL_JSON_OPTIONS
    )
    result: dict[str, Any] = json.loads(as_json)
    return result


def with_retries(
    what: str,
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    backoff_s: float = 1.0,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``fn`` again after a transient database error, with exponential backoff.

    Only errors that a later attempt can cure are retried; a refused command (bad query,
    duplicate key, authentication) is raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            if attempt == attempts:
                raise DatabaseError(
                    f"{what} failed after {attempts} attempts: {exc}; "
                    "check that MongoDB is reachable, then run it again"
                ) from exc
            if on_retry:
                on_retry(attempt, exc)
            time.sleep(backoff_s * 2 ** (attempt - 1))
        except PyMongoError as exc:
            raise DatabaseError(f"{what} failed: {describe(exc)}") from exc
    raise AssertionError("unreachable")


def describe(exc: PyMongoError) -> str:
    """What the server refused, by document id and reason, never the documents' contents.

    A bulk write error's text carries every refused document whole (phone numbers included); it
    would end up in error answers, logs and Dagster's run records.
    """
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        said = []
        for e in errors[:5]:
            op = e.get("op")
            doc_id = op.get("_id") if isinstance(op, Mapping) else None  # raw or decoded
            said.append(f"document {doc_id}: {e.get('errmsg', 'refused')} (code {e.get('code')})")
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        return f"{len(errors)} document(s) refused: {'; '.join(said)}{more}"
    return str(exc)
