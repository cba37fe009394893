"""Dagster resources: thin wrappers that hand engine objects to assets and ops.

They hold only what Dagster should show and let a deployment change: a URI without its password,
a directory, the *names* of the environment variables with the key and the database password.
Secrets never appear in resource config.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.crypto import KeyRing, load_keyring, load_keyring_if_any
from bmc_pipeline.engine.mongo import connect, split_password
from bmc_pipeline.engine.remote import RemoteStore, remote_store
from bmc_pipeline.engine.store import BackupStore

# the variable's name, not a password: set from the configured URI when definitions load
PASSWORD_ENV = "BMC_MONGODB_PASSWORD"  # noqa: S105


class MongoResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The database to back up or restore into (a mongomock:// URI runs in process, for tests).

    The URI never holds a password (the UI shows it to everyone who can open it); the password
    field names the environment variable that holds it (PASSWORD_ENV).
    """

    uri: str
    database: str
    password: str | None = None
    server_selection_timeout_ms: int = 5000
    socket_timeout_ms: int = 60_000

    def client(self) -> Any:
        return connect(
            self.uri,
            server_selection_timeout_ms=self.server_selection_timeout_ms,
            socket_timeout_ms=self.socket_timeout_ms,
            password=self.password,
        )

    def database_handle(self) -> Any:
        return self.client()[self.database]


class EncryptionResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The backup keys: from the BMC_BACKUP_KEY environment variable, then the key file."""

    key: str | None = None
    key_file: str | None = None

    def keyring(self) -> KeyRing:
        return load_keyring(self.key, self.key_file)

    def keyring_if_any(self) -> KeyRing | None:
        """The key ring, or None where none is configured (a scan of plaintext files)."""
        return load_keyring_if_any(self.key, self.key_file)


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where backups are stored: a local directory, and a second copy at an fsspec URL if set.

    The local directory is where publication is atomic; the remote URL (s3://, gs://, sftp://,
    file://, ...) receives each backup after it is published and validated.
    """

    backup_dir: str
    # octal, as chmod takes them (the UI would show 0o755 as 493)
    dir_mode: str = Field(default="755", description="mode of the backup directories (octal)")
    file_mode: str = Field(default="600", description="mode of the backup files (octal)")
    remote_url: str | None = None
    remote_options: dict[str, Any] = Field(default_factory=dict)
    remote_object_lock_days: int | None = None
    remote_object_lock_mode: str = "GOVERNANCE"

    def store(self) -> BackupStore:
        from pathlib import Path

        return BackupStore(
            Path(self.backup_dir), dir_mode=int(self.dir_mode, 8), file_mode=int(self.file_mode, 8)
        )

    def remote(self) -> RemoteStore | None:
        return remote_store(self.remote_url, self.remote_options, self.remote_object_lock_days,
                            self.remote_object_lock_mode)  # fmt: skip


def resources_from_settings(settings: Settings) -> dict[str, Any]:
    """The resources for a deployment described by ``settings``.

    The key is passed as ``EnvVar`` so that Dagster's UI shows the variable's name, not its value.
    """
    key: Any = dg.EnvVar("BMC_BACKUP_KEY") if settings.backup_key else None
    uri, password = split_password(settings.mongodb.uri)
    if password is not None:
        # every process that loads these definitions (webserver, daemon, run worker) puts the
        # password where the EnvVar finds it; the configuration Dagster shows names the variable
        os.environ[PASSWORD_ENV] = password
    return {
        "mongo": MongoResource(
            uri=uri,
            password=dg.EnvVar(PASSWORD_ENV) if password is not None else None,
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
            dir_mode=f"{settings.storage.dir_mode:o}",
            file_mode=f"{settings.storage.file_mode:o}",
            remote_url=settings.storage.remote_url,
            remote_options=settings.storage.remote_options,
            remote_object_lock_days=settings.storage.remote_object_lock_days,
            remote_object_lock_mode=settings.storage.remote_object_lock_mode,
        ),
    }
