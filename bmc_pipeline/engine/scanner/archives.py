"""Our own backups met on the way: their conversations are read through the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import bson.errors

from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.scanner.fold import Spool
from bmc_pipeline.engine.scanner.form import canonical, find_conversations, is_conversation
from bmc_pipeline.engine.scanner.reading import FileReport, json_values
from bmc_pipeline.engine.store import BackupStore, backup_id_of_manifest

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
    entry = m.collections.get(collection)
    if entry is None:
        return
    with (manifest.parent / entry.documents.file).open("rb") as fh:
        reader = ArchiveReader(
            fh, keyring, name=f"backup {bid}", declared_raw=entry.documents.raw_bytes
        )
        for raw in reader.documents():
            doc = bson.decode(raw, codec_options=_BSON_DATES)
            if is_conversation(doc):
                yield doc


def scan_archive(
    path: Path, keyring: KeyRing | None, spool: Spool, file_no: int, date_fields: frozenset[str]
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
    for value in json_values(path, report):
        for conv in find_conversations(value):
            yield canonical(conv, date_fields)
