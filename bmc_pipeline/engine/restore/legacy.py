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
from bmc_pipeline.engine.identity import derived_id
from bmc_pipeline.engine.rawbson import BSON_REFUSES
from bmc_pipeline.engine.restore.write import CODEC
from bmc_pipeline.engine.store import BackupStore


def _documents_in(path: Path, collection: str) -> list[Any]:
    """The list of documents a JSON file holds: the envelope's, the array, or a nested list."""
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
    return docs


class LegacyFile:
    """The documents of a JSON file found on disk, as BSON, each one accounted for.

    A document without ``_id`` gets one derived from it (:func:`derived_id`), or, with
    ``require_ids``, is refused; an element that is not a document, or that BSON cannot hold, is
    refused. ``read`` counts every element, ``refused`` says why each refused one was.
    """

    def __init__(self, path: Path, collection: str, *, require_ids: bool = False) -> None:
        self.path, self.collection, self.require_ids = path, collection, require_ids
        self.read = 0
        self.generated_ids = 0
        self.refused: list[str] = []

    def __iter__(self) -> Iterator[bytes]:
        for i, d in enumerate(_documents_in(self.path, self.collection)):
            self.read += 1
            where = f"{self.path.name}#{i}"
            if not isinstance(d, dict):
                self.refused.append(f"{where}: not a document ({type(d).__name__})")
                continue
            if "_id" not in d:
                if self.require_ids:
                    self.refused.append(f"{where}: no _id (refused: --require-ids)")
                    continue
                try:
                    d = {"_id": derived_id(d), **d}
                except UnicodeEncodeError as exc:
                    self.refused.append(f"{where}: cannot be given an id: {exc}")
                    continue
                self.generated_ids += 1
            try:
                yield bson.encode(d, codec_options=CODEC)
            except BSON_REFUSES as exc:
                self.refused.append(f"{where}: BSON cannot hold it: {exc}")


def legacy_documents(path: Path, collection: str, *, require_ids: bool = False) -> LegacyFile:
    """The documents of a JSON file found on disk (see :class:`LegacyFile`)."""
    return LegacyFile(path, collection, require_ids=require_ids)


def resolve_source(
    store: BackupStore, backup_file: str, collection: str, *, require_ids: bool = False
) -> tuple[str, LegacyFile | None]:
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
        return f"file:{p.name}", LegacyFile(p, collection, require_ids=require_ids)
    return backup_file, None
