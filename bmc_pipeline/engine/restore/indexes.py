"""Collection options and indexes: recorded by every backup, recreated and checked by restores.

A backup records what ``listCollections`` and ``listIndexes`` say (mongodump's ``metadata.json``
shape, in canonical Extended JSON). A restore creates a missing target collection with the
recorded options, and each recorded index that the target lacks:

* into an empty (or new) collection, **before** the data, so documents are indexed as they arrive
  and a unique index is in force from the first write;
* into a collection that already holds documents, **after** the data, so an index that the
  current documents break (a unique index with duplicates) is reported by name with the server's
  reason instead of stopping the restore half-way.

An index that cannot be built makes the restore unverified. Verification compares the target's
index set (names, keys and recorded options) with the backup's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bson import json_util
from pymongo.errors import PyMongoError

# Fields of a listIndexes entry that describe the server's bookkeeping, not the index.
_NOT_OPTIONS = frozenset({"v", "ns", "key", "name", "background"})


def _decode(value: Any) -> Any:
    """A canonical Extended JSON value (as the manifest stores it) as Python/BSON values."""
    return json_util.loads(json.dumps(value))


@dataclass(frozen=True)
class IndexSpec:
    name: str
    key: list[tuple[str, Any]]
    options: dict[str, Any]

    def describe(self) -> str:
        keys = ", ".join(f"{k}: {v}" for k, v in self.key)
        opts = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"{self.name} ({{{keys}}}{opts})"


@dataclass
class CollectionShape:
    """The recorded options and indexes (without ``_id_``) of one collection."""

    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[IndexSpec] = field(default_factory=list)

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> CollectionShape:
        options = _decode(metadata.get("options") or {})
        specs = []
        for ix in metadata.get("indexes") or []:
            ix = _decode(ix)
            if ix.get("name") == "_id_":
                continue
            opts = {k: v for k, v in ix.items() if k not in _NOT_OPTIONS}
            specs.append(IndexSpec(str(ix["name"]), list(ix["key"].items()), opts))
        return cls(dict(options), specs)


def _current(coll: Any) -> dict[str, IndexSpec]:
    out = {}
    for ix in coll.list_indexes():
        ix = dict(ix)
        opts = {k: v for k, v in ix.items() if k not in _NOT_OPTIONS}
        out[str(ix["name"])] = IndexSpec(str(ix["name"]), list(ix["key"].items()), opts)
    return out


def ensure_collection(db: Any, name: str, shape: CollectionShape) -> bool:
    """Create collection ``name`` with its recorded options if it does not exist; True if made."""
    try:
        if name in db.list_collection_names():
            return False
        db.create_collection(name, **shape.options)
    except (PyMongoError, NotImplementedError, TypeError):
        return False  # another writer made it, or the server (mongomock) lacks an option
    return True


def create_indexes(coll: Any, shape: CollectionShape) -> tuple[list[str], dict[str, str]]:
    """Create the recorded indexes the collection lacks: (created names, name -> why it failed)."""
    created: list[str] = []
    failed: dict[str, str] = {}
    try:
        have = _current(coll)
    except (PyMongoError, NotImplementedError):
        have = {}
    for spec in shape.indexes:
        if spec.name in have:
            continue
        try:
            coll.create_index(spec.key, name=spec.name, **spec.options)
            created.append(spec.name)
        except (PyMongoError, NotImplementedError, TypeError) as exc:
            reason = str(getattr(exc, "details", None) or {}).strip("{}") or str(exc)
            failed[spec.name] = f"index {spec.describe()} could not be built: {reason}"
    return created, failed


def compare_indexes(coll: Any, shape: CollectionShape) -> list[str]:
    """How the target's indexes differ from the backup's; empty when every one is there as recorded.

    Indexes the target has beyond the backup's are not differences (someone added them since).
    """
    try:
        have = _current(coll)
    except (PyMongoError, NotImplementedError) as exc:
        return [f"the target's indexes cannot be listed: {exc}"]
    out = []
    for spec in shape.indexes:
        got = have.get(spec.name)
        if got is None:
            out.append(f"index {spec.name} is missing")
        elif got.key != spec.key:
            out.append(f"index {spec.name} has keys {got.key}, the backup's has {spec.key}")
        else:
            differ = {k: v for k, v in spec.options.items() if got.options.get(k) != v}
            if differ:
                out.append(f"index {spec.name} lacks options {differ} that the backup records")
    return out
