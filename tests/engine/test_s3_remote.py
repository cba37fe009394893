"""The remote copy on S3 (moto's S3 API on loopback): push, list, pull, retention, delete, and
S3 Object Lock, which no delete, through the API, the command line or retention, gets past."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto", reason="moto is a dev dependency: pip install -e '.[dev]'")
pytest.importorskip("s3fs", reason="s3fs is a dev dependency: pip install -e '.[dev]'")

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import GuardedError
from bmc_pipeline.engine.remote import RemoteStore
from bmc_pipeline.engine.retention import RetentionPolicy, delete_backup, rotate
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.validate import validate_backup
from tests.support.s3server import make_bucket, s3_options, s3_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


def _remote(endpoint: str, bucket: str, **kw: Any) -> RemoteStore:
    return RemoteStore(f"s3://{bucket}/bmc", s3_options(endpoint), **kw)


def test_push_list_pull_and_delete_on_s3(
    endpoint: str, mock_settings: Settings, full_backup: BackupResult, keyring: KeyRing,
    tmp_path: Path,
) -> None:  # fmt: skip
    make_bucket(endpoint, "plain")
    remote = _remote(endpoint, "plain")
    store = BackupStore(mock_settings.backup_dir)
    pushed = remote.push(store, full_backup.ref, keyring)
    assert pushed.uploaded_files > 3 and remote.backup_ids() == [full_backup.backup_id]
    assert remote.push(store, full_backup.ref, keyring).uploaded_files == 0  # already there
    fresh = BackupStore(tmp_path / "new_machine")
    ref = remote.pull(fresh, full_backup.backup_id, keyring)
    assert validate_backup(fresh, ref, keyring).ok
    assert remote.backup_locked_until(store, full_backup.backup_id) is None
    remote.delete(store, full_backup.backup_id)
    assert remote.backup_ids() == []


def test_an_object_locked_backup_survives_every_delete(
    endpoint: str, mock_settings: Settings, mock_db: Any, full_backup: BackupResult,
    keyring: KeyRing,
) -> None:  # fmt: skip
    make_bucket(endpoint, "locked", object_lock=True)
    remote = _remote(endpoint, "locked", lock_days=1)
    store = BackupStore(mock_settings.backup_dir)
    remote.push(store, full_backup.ref, keyring)
    until = remote.backup_locked_until(store, full_backup.backup_id)
    assert until is not None
    # a newer full, so that no guard but the lock keeps the first one
    BackupEngine(mock_settings, mock_db, store, keyring).run("full", include_files=False)
    with pytest.raises(GuardedError, match="Object Lock until"):
        delete_backup(store, keyring, full_backup.backup_id, remote=remote)
    assert store.ref(full_backup.backup_id).manifest_path.exists()  # nothing deleted here either
    with pytest.raises(GuardedError, match="cannot be deleted before"):
        remote.delete(store, full_backup.backup_id)
    assert full_backup.backup_id in remote.backup_ids()
    # retention deletes it here, keeps it there, and says until when
    result = rotate(store, keyring, RetentionPolicy(daily=1, weekly=0, monthly=0), dry_run=False,
                    remote=remote)  # fmt: skip
    assert full_backup.backup_id in result.deleted
    assert result.remote_locked[full_backup.backup_id] == until.isoformat()
    assert full_backup.backup_id in remote.backup_ids()


def test_object_lock_needs_an_s3_remote(tmp_path: Path) -> None:
    from bmc_pipeline.engine.errors import RemoteError

    with pytest.raises(RemoteError, match="needs an s3:// remote"):
        RemoteStore(f"file://{tmp_path}", lock_days=1)


def test_a_locked_backup_cannot_be_deleted_through_the_api_or_the_command_line(
    endpoint: str, mock_settings: Settings, mock_db: Any, full_backup: BackupResult,
    keyring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from fastapi.testclient import TestClient

    from bmc_pipeline.api.app import create_app
    from bmc_pipeline.api.tokens import TokenStore
    from bmc_pipeline.cli import main
    from tests.support import write_config

    make_bucket(endpoint, "locked-api", object_lock=True)
    storage = mock_settings.storage.model_copy(update={
        "remote_url": "s3://locked-api/bmc", "remote_options": s3_options(endpoint),
        "remote_object_lock_days": 1,
    })  # fmt: skip
    settings = mock_settings.model_copy(update={"storage": storage})
    store = BackupStore(settings.backup_dir)
    remote = _remote(endpoint, "locked-api", lock_days=1)
    remote.push(store, full_backup.ref, keyring)
    BackupEngine(settings, mock_db, store, keyring).run("full", include_files=False)
    bid = full_backup.backup_id
    token = TokenStore.for_settings(settings).create("alice", "admin")[0]
    with TestClient(create_app(settings)) as c:
        r = c.delete(f"/api/recovery/backups/{bid}", params={"confirm": bid},
                     headers={"authorization": f"Bearer {token}"})  # fmt: skip
    assert r.status_code == 409 and "Object Lock until" in r.json()["detail"], r.text
    cfg = str(write_config(settings, tmp_path / "config.json"))
    assert main(["--config", cfg, "delete", bid, "--confirm", bid]) == 9
    assert "Object Lock until" in capsys.readouterr().err
    assert store.ref(bid).manifest_path.exists() and bid in remote.backup_ids()
