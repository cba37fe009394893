"""Legacy sources: JSON files found on disk (exports, the old envelope) restored like a backup.

A file is the backup envelope (``{"backup_metadata", "collections": {...}}``), a JSON array, or an
object nesting a list of documents; values in Extended JSON become BSON types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
from bson import json_util

from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.restore.write import CODEC
from bmc_pipeline.engine.store import BackupStore


def legacy_documents(path: Path, collection: str) -> Iterator[bytes]:
    """Documents of a JSON file found on disk: the backup envelope, an array, or a nested object.

    Values in Extended JSON (``{"$oid": ...}``, ``{"$date": ...}``) are read as BSON types.
    """
    try:
        data = json_util.loads(path.read_text(encoding="utf-8-sig"))  # with or without a BOM
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BmcError(f"{path}: cannot read as JSON: {exc}") from None
    docs: Any = None
    if isinstance(data, dict) and isinstance(data.get("collections"), dict):
        docs = data["collections"].get(collection)
    elif isinstance(data, list):
        docs = data
    elif isinstance(data, dict):
        stack = [data]
        while stack and docs is None:
            node = stack.pop()
            for k in (collection, "conversations", "data"):
                v = node.get(k)
                if isinstance(v, list):
                    docs = v
                    break
                if isinstance(v, dict):
                    stack.append(v)
        if docs is None and "_id" in data:
            docs = [data]
    if not isinstance(docs, list):
        raise BmcError(f"{path}: found no list of {collection!r} documents")
    for d in docs:
        if isinstance(d, dict) and "_id" in d:
            yield bson.encode(d, codec_options=CODEC)


def resolve_source(
    store: BackupStore, backup_file: str, collection: str
) -> tuple[str, Iterator[bytes] | None]:
    """A backup id, a manifest path, or a legacy JSON file -> (backup id, legacy documents)."""
    p = Path(backup_file)
    if p.suffix == ".json" and p.is_file():
        try:
            head = (
                json.loads(p.read_text(encoding="utf-8")) if p.stat().st_size < 64 << 20 else None
            )
        except (ValueError, UnicodeDecodeError):
            head = None
        meta = head.get("backup_metadata") if isinstance(head, dict) else None
        if isinstance(head, dict) and isinstance(meta, dict) and "authentication" in head:
            return str(meta["backup_id"]), None
        return f"file:{p.name}", legacy_documents(p, collection)
    return backup_file, None
