"""The engine objects one configuration describes: key ring, backup store, blob store, database.

The command line, the demo and the Python API build them the same way from :class:`Settings`;
this is that one way. (Dagster builds them through its resources, which hold the same values.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import (
    Channel,
    DiscordChannel,
    LogFileChannel,
    Notifier,
    SlackChannel,
    SmtpChannel,
)
from bmc_pipeline.engine.crypto import KeyRing, load_keyring, load_keyring_if_any
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.remote import RemoteStore, remote_store
from bmc_pipeline.engine.store import BackupStore


@dataclass(frozen=True)
class Deployment:
    settings: Settings

    def _key_file(self) -> Path | None:
        s = self.settings
        return s.path(s.encryption.key_file) if s.encryption.key_file else None

    def keyring(self) -> KeyRing:
        return load_keyring(self.settings.backup_key, self._key_file())

    def keyring_if_any(self) -> KeyRing | None:
        """The key ring, or None where none is configured (for work that can do without)."""
        return load_keyring_if_any(self.settings.backup_key, self._key_file())

    def store(self) -> BackupStore:
        s = self.settings
        return BackupStore(s.backup_dir, dir_mode=s.storage.dir_mode, file_mode=s.storage.file_mode)

    def remote(self) -> RemoteStore | None:
        """The remote copy, if ``storage.remote_url`` is set."""
        st = self.settings.storage
        return remote_store(st.remote_url, st.remote_options, st.remote_object_lock_days,
                            st.remote_object_lock_mode)  # fmt: skip

    def blobs(self, keyring: KeyRing) -> BlobStore:
        s = self.settings
        return BlobStore(
            self.store(),
            keyring,
            level=s.compression.level,
            segment_size=s.encryption.segment_size,
        )

    def notifier(self) -> Notifier:
        """Every configured channel; the log file always, e-mail and webhooks when set up."""
        s = self.settings
        log = s.path(s.alerts.log_file)
        rotate = s.alerts.log_rotate_bytes
        channels: list[Channel] = [LogFileChannel(log, rotate_bytes=rotate)]
        if s.alerts.email:
            e = s.alerts.email
            channels.append(
                SmtpChannel(
                    e.host, e.port, e.sender, e.recipients, e.security, e.username, s.smtp_password
                )
            )
        if s.slack_webhook_url:
            channels.append(SlackChannel(s.slack_webhook_url))
        if s.discord_webhook_url:
            channels.append(DiscordChannel(s.discord_webhook_url))
        return Notifier(channels, failure_log=log, rotate_bytes=rotate)

    def database(self) -> Any:
        m = self.settings.mongodb
        return connect(
            m.uri,
            server_selection_timeout_ms=m.server_selection_timeout_ms,
            socket_timeout_ms=m.socket_timeout_ms,
        )[m.database]
