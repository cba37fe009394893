"""Files holding decrypted documents are readable by their owner only (mode 0600), whatever the
umask: the quarantine, exports (and their metadata.json) and the scan reports."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.export import export_collection, metadata_path
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.scanner import scan_settings, write_reports
from bmc_pipeline.engine.store import BackupStore


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems have: new files 0644 unless told otherwise
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_quarantine_exports_and_reports_are_0600(
    mock_settings: Settings,
    mock_db: Any,
    full_backup: BackupResult,
    keyring: KeyRing,
    tmp_path: Path,
) -> None:
    store = BackupStore(mock_settings.backup_dir)
    out = tmp_path / "quotes.bson"
    export_collection(store, full_backup.ref, keyring, "quotes", "bson", out)
    assert _mode(out) == 0o600 and _mode(metadata_path(out)) == 0o600
    export_collection(store, full_backup.ref, keyring, "quotes", "ejson", tmp_path / "q.json")
    assert _mode(tmp_path / "q.json") == 0o600

    cfg = mock_settings.collection("quotes").model_copy(
        update={"required_fields": {"no_such_field": "string"}}  # every document is invalid
    )
    strict = mock_settings.model_copy(
        update={"collections": {**mock_settings.collections, "quotes": cfg}}
    )
    report = RestoreEngine(strict, mock_db, store, keyring).restore(
        full_backup.backup_id, "quotes", target_collection="quotes_check"
    )
    assert report.invalid > 0 and report.quarantine_file
    assert _mode(Path(report.quarantine_file)) == 0o600

    scanned = scan_settings(mock_settings, source="mongodb", db=mock_db)
    for path in write_reports(scanned, tmp_path / "reports"):
        assert _mode(path) == 0o600
