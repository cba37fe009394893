"""Export one collection of a backup to formats other tools read.

``bson`` writes the documents exactly as stored, a file ``mongorestore`` accepts. ``ejson`` writes
the seed's single-JSON envelope with the documents in canonical Extended JSON, for people and
scripts that want plain JSON; it is streamed, one document at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import bson
from bson import json_util

from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.atomic import atomic_write, write_atomic
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.manifest import Manifest
from bmc_pipeline.engine.store import BackupRef, BackupStore

FORMATS = ("bson", "ejson")


def _open_archive(ref: BackupRef, manifest: Manifest, collection: str) -> tuple[Path, int]:
    colls = manifest.collections
    if collection not in colls:
        raise BmcError(
            f"backup {ref.backup_id} holds no collection {collection!r}; "
            f"it holds: {', '.join(sorted(colls)) or 'none'}"
        )
    entry = colls[collection].documents
    return ref.manifest_path.parent / entry.file, entry.raw_bytes


def export_collection(
    store: BackupStore,
    ref: BackupRef,
    keyring: KeyRing,
    collection: str,
    fmt: str,
    out_path: Path,
) -> int:
    """Write the documents stored for ``collection`` in this backup; returns how many.

    The output is written to a temporary name and renamed at the end, so a failed export (a
    corrupt archive, say) never leaves a partial file that looks complete.
    """
    if fmt not in FORMATS:
        raise BmcError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    manifest = store.load_manifest(ref, keyring)
    src, declared = _open_archive(ref, manifest, collection)
    # decrypted documents: readable by their owner only
    with src.open("rb") as fh, atomic_write(out_path, mode=0o600) as out:
        reader = ArchiveReader(
            fh, keyring, name=f"backup {ref.backup_id}: {src.name}", declared_raw=declared
        )
        if fmt == "ejson":
            return _write_ejson(out, manifest, collection, reader)
        for batch in reader.raw_batches():
            out.write(batch)
    # beside the documents, what mongorestore reads to recreate the collection and its indexes
    recorded = manifest.collections[collection].metadata
    meta = {
        "options": recorded.get("options", {}),
        "indexes": recorded.get("indexes", []),
        "collectionName": collection,
        "type": "collection",
    }
    write_atomic(metadata_path(out_path), (json.dumps(meta, indent=2) + "\n").encode(), mode=0o600)
    return reader.stats.documents


def metadata_path(out_path: Path) -> Path:
    """``conversations.bson`` -> ``conversations.metadata.json`` (mongodump's names)."""
    stem = out_path.name[: -len(".bson")] if out_path.name.endswith(".bson") else out_path.name
    return out_path.with_name(f"{stem}.metadata.json")


_DECODE: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True, datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)


def _write_ejson(out: BinaryIO, manifest: Manifest, collection: str, reader: ArchiveReader) -> int:
    """The seed's envelope, streamed: the documents array is written one document at a time."""

    def field(name: str, value: Any) -> bytes:
        return f"  {json.dumps(name)}: {json.dumps(value, sort_keys=True)},\n".encode()

    meta = manifest.as_dict()
    out.write(b"{\n")
    out.write(field("backup_metadata", meta["backup_metadata"]))
    out.write(
        field(
            "collection_metadata", {collection: meta["collections"][collection].get("metadata", {})}
        )
    )
    out.write(f'  "collections": {{{json.dumps(collection)}: ['.encode())
    n = 0
    for doc in reader.documents():
        text = json_util.dumps(
            bson.decode(doc, codec_options=_DECODE), json_options=json_util.CANONICAL_JSON_OPTIONS
        )
        out.write((",\n    " if n else "\n    ").encode() + text.encode())
        n += 1
    out.write(b"\n  ]},\n")
    out.write(field("filesystem", manifest.filesystem))
    checksums = json.dumps({collection: manifest.checksums.get(collection)})
    out.write(f'  "checksums": {checksums}\n}}\n'.encode())
    return n
