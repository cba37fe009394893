"""Shared fixtures: keys, settings, and a real MongoDB wire-protocol server.

Integration tests run against FerretDB (built into .tools/ by ``make setup``), started on a free
loopback port with a temporary data directory, or against ``MONGODB_URI`` if that is set (a real
MongoDB runs the same tests). Where neither is available they are skipped with a message saying how
to enable them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import (
    DevServer,
    ephemeral_server,
    ferretdb_binary,
    free_port,
    installed_version,
)
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore
from tests.support import ROOT, make_settings, unreachable, write_config

__all__ = ["ROOT", "make_settings", "unreachable", "write_config"]

ENABLE_HINT = (
    "no MongoDB-compatible server: run 'make setup' (needs Go) to build FerretDB into .tools/, "
    "or set MONGODB_URI to a MongoDB server"
)


@pytest.fixture
def key() -> Key:
    return Key(os.urandom(32))


@pytest.fixture
def keyring(key: Key) -> KeyRing:
    return KeyRing([key])


@pytest.fixture
def store(tmp_path: Path) -> BackupStore:
    return BackupStore(tmp_path / "backups")


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB wire-protocol server for the whole test session."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    binary = ferretdb_binary(ROOT / ".tools")
    if installed_version(binary) is None:
        pytest.skip(ENABLE_HINT)
    server = DevServer(binary, tmp_path_factory.mktemp("ferretdb"), free_port())
    server.start(die_with_parent=True)
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def ferret_binary() -> Path:
    binary = ferretdb_binary(ROOT / ".tools")
    if installed_version(binary) is None:
        pytest.skip(ENABLE_HINT)
    return binary


@pytest.fixture
def own_server(ferret_binary: Path, tmp_path: Path) -> Iterator[DevServer]:
    """A server of the test's own, which the test may stop and start again (FerretDB only)."""
    with ephemeral_server(ferret_binary, tmp_path / "own-server") as server:
        yield server


_db_counter = iter(range(1_000_000))


@pytest.fixture
def db_name() -> str:
    """A fresh database name per test, so tests never see each other's data."""
    return f"bmc_test_{os.getpid()}_{next(_db_counter)}"


@pytest.fixture
def mongo_db(mongo_uri: str, db_name: str) -> Iterator[Any]:
    client = connect(mongo_uri)
    yield client[db_name]
    client.drop_database(db_name)


@pytest.fixture
def settings(tmp_path: Path, mongo_uri: str, db_name: str, key: Key) -> Settings:
    return make_settings(tmp_path, mongo_uri, db_name, key)


# -- the in-process setup most tests start from: settings, a seeded database, a full backup --------
@pytest.fixture
def mock_settings(tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a mongomock database of this test's own, every path in its temporary directory.

    The key is also put in the environment, where Dagster's resources read it (its UI shows the
    variable's name, never the value).
    """
    s = make_settings(tmp_path, f"mongomock://{tmp_path.name}", "bmc-cotizaciones", key)
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    return s


@pytest.fixture
def mock_db(mock_settings: Settings) -> Any:
    return connect(mock_settings.mongodb.uri)[mock_settings.mongodb.database]


@pytest.fixture
def seeded(mock_settings: Settings, mock_db: Any) -> dict[str, int]:
    """The sample data set (20 conversations and the other collections) and the chatbot's files."""
    counts = seed_database(mock_db, 20, seed=1)
    write_files(mock_settings.files_root, seed=1)
    return counts


@pytest.fixture
def full_backup(
    mock_settings: Settings, mock_db: Any, seeded: dict[str, int], keyring: KeyRing
) -> BackupResult:
    """One full backup of the seeded database and files, published in the test's store."""
    return BackupEngine(mock_settings, mock_db, BackupStore(mock_settings.backup_dir), keyring).run(
        "full"
    )


def which_go() -> str | None:
    return shutil.which("go")


@pytest.fixture(autouse=True)
def _fresh_dagster_state_storage() -> Iterator[None]:
    """Each test starts without a Dagster state storage left in context by an earlier one.

    Dagster keeps the state storage of the instance last entered in a context variable, and an
    instance entered twice (``instance_for_test`` plus ``execute_in_process``) is not reset on
    exit; a later test would then find the storage of a temporary instance already deleted.
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """The command line sets the process umask (077) when it runs; in-process calls of ``main``
    must not change what later tests create."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)
