"""The typed manifest reads and writes archive format v1 exactly, and refuses other formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import IntegrityError
from bmc_pipeline.engine.manifest import Manifest
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.store import BackupStore


def test_a_manifest_read_back_is_the_document_that_was_written(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, keyring: KeyRing
) -> None:
    s, db, full = mock_settings, mock_db, full_backup
    store = BackupStore(s.backup_dir)
    db["conversations"].delete_one({})
    inc = BackupEngine(s, db, store, keyring).run("incremental")
    db.drop_collection("sessions")
    rollback_id = (
        RestoreEngine(s, db, store, keyring).restore(inc.backup_id, "sessions").rollback_id
    )
    assert rollback_id is not None
    for bid in (full.backup_id, inc.backup_id, rollback_id):
        ref = store.resolve(bid)
        on_disk = json.loads(ref.manifest_path.read_text())
        on_disk.pop("authentication")
        typed = store.load_manifest(ref, keyring)
        assert typed.as_dict() == on_disk  # same keys, same values, nulls where there were nulls
    assert full.manifest.collections["conversations"].tombstones is None
    assert inc.manifest.collections["conversations"].parent == full.backup_id
    assert store.load_manifest(store.resolve(rollback_id), keyring).backup_metadata.restore_of


def test_an_unknown_format_is_refused_naming_it() -> None:
    doc = {
        "backup_metadata": {
            "timestamp": "2026-11-25T02:00:00+00:00", "backup_type": "full", "version": "1",
            "database": "bmc", "backup_id": "20261125T020000Z-full-abcdef", "format": 2,
        },
    }  # fmt: skip
    with pytest.raises(IntegrityError, match="archive format 2"):
        Manifest.parse(doc, name="backup x")


def test_a_manifest_missing_a_required_field_names_the_field() -> None:
    doc = {"backup_metadata": {"backup_type": "full"}}
    with pytest.raises(IntegrityError, match=r"backup_metadata\.timestamp"):
        Manifest.parse(doc, name="backup x")
