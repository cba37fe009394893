"""Dagster resources: thin wrappers that hand engine objects to assets and ops.

They hold only what Dagster should show and let a deployment change: a URI, a directory, the
*name* of the environment variable with the key. Secrets never appear in resource config.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.crypto import KeyRing, load_keyring
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.remote import RemoteStore
from bmc_pipeline.engine.store import BackupStore


class MongoResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The database to back up or restore into; ``mongomock://`` runs in process (tests)."""

    uri: str
    database: str
    server_selection_timeout_ms: int = 5000
    socket_timeout_ms: int = 60_000

    def client(self) -> Any:
        return connect(
            self.uri,
            server_selection_timeout_ms=self.server_selection_timeout_ms,
            socket_timeout_ms=self.socket_timeout_ms,
        )

    def database_handle(self) -> Any:
        return self.client()[self.database]


class EncryptionResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The key ring: keys from ``key`` (normally ``EnvVar("BMC_BACKUP_KEY")``) then ``key_file``."""

    key: str | None = None
    key_file: str | None = None

    def keyring(self) -> KeyRing:
        return load_keyring(self.key, self.key_file)


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where backups are stored: a local directory, and a second copy at an fsspec URL if set.

    The local directory is where publication is atomic; ``remote_url`` (``s3://``, ``gs://``,
    ``sftp://``, ``file://``, ...) receives each backup after it is published and validated.
    """

    backup_dir: str
    dir_mode: int = 0o755
    file_mode: int = 0o600
    remote_url: str | None = None
    remote_options: dict[str, Any] = Field(default_factory=dict)

    def store(self) -> BackupStore:
        from pathlib import Path

        return BackupStore(Path(self.backup_dir), dir_mode=self.dir_mode, file_mode=self.file_mode)

    def remote(self) -> RemoteStore | None:
        return RemoteStore(self.remote_url, self.remote_options) if self.remote_url else None


def resources_from_settings(settings: Settings) -> dict[str, Any]:
    """The resources for a deployment described by ``settings``.

    The key is passed as ``EnvVar`` so that Dagster's UI shows the variable's name, not its value.
    """
    key: Any = dg.EnvVar("BMC_BACKUP_KEY") if settings.backup_key else None
    return {
        "mongo": MongoResource(
            uri=settings.mongodb.uri,
            database=settings.mongodb.database,
            server_selection_timeout_ms=settings.mongodb.server_selection_timeout_ms,
            socket_timeout_ms=settings.mongodb.socket_timeout_ms,
        ),
        "encryption": EncryptionResource(
            key=key,
            key_file=str(settings.path(settings.encryption.key_file))
            if settings.encryption.key_file
            else None,
        ),
        "storage": StorageResource(
            backup_dir=str(settings.backup_dir),
            dir_mode=settings.storage.dir_mode,
            file_mode=settings.storage.file_mode,
            remote_url=settings.storage.remote_url,
            remote_options=settings.storage.remote_options,
        ),
    }
