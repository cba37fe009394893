"""``validate`` finds what would make a restore fail: here, a backup holding one _id twice."""

from __future__ import annotations

import json
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.archive import ArchiveReader, ArchiveWriter
from bmc_pipeline.engine.backup import BackupResult
from bmc_pipeline.engine.crypto import KeyRing, manifest_mac
from bmc_pipeline.engine.store import BackupStore, canonical_json
from bmc_pipeline.engine.validate import validate_backup


def test_a_backup_holding_an_id_twice_does_not_validate(
    mock_settings: Settings, full_backup: BackupResult, keyring: KeyRing
) -> None:
    """Crafted with the key: the archive and its manifest entry agree, only the ids repeat."""
    store = BackupStore(mock_settings.backup_dir)
    ref = full_backup.ref
    doc = json.loads(ref.manifest_path.read_text())
    entry = doc["collections"]["quotes"]["documents"]
    path = ref.manifest_path.parent / entry["file"]
    with path.open("rb") as fh:
        docs = list(ArchiveReader(fh, keyring).documents())
    with path.open("wb") as out:
        writer = ArchiveWriter(out, keyring, level=3, segment_size=1 << 20)
        for raw in [*docs, docs[0]]:
            writer.write_batch(raw)
        stats = writer.close()
    entry.update(documents=stats.documents, raw_bytes=stats.raw_bytes, stored_bytes=stats.stored_bytes,
                 sha256=stats.sha256, stored_sha256=stats.stored_sha256, segments=stats.segments)  # fmt: skip
    body: dict[str, Any] = {k: v for k, v in doc.items() if k != "authentication"}
    doc["authentication"]["mac"] = manifest_mac(keyring.primary, canonical_json(body))
    ref.manifest_path.write_text(json.dumps(doc))

    report = validate_backup(store, ref, keyring)
    assert not report.ok
    (error,) = report.errors
    assert "1 document(s) repeat an _id already in the archive" in error and "quotes" in error
