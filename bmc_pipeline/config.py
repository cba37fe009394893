"""The one source of settings: ``backup_config.json`` plus named environment overrides.

Nothing else in the project reads the configuration file or ``os.environ``; everything receives a
:class:`Settings` object. Unknown keys are refused (``extra="forbid"``) so a typo in the file is an
error that names the key instead of a setting that silently does nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import limits
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bmc_pipeline.engine.errors import ConfigError
from bmc_pipeline.engine.vocabulary import Strategy

DEFAULT_CONFIG_NAME = "backup_config.json"

# MongoDB's own rules for collection names, narrowed to what a backup file name can hold safely.
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,119}$")

FieldType = Literal["string", "int", "number", "bool", "date", "array", "object", "objectId"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MongoSettings(_Strict):
    """Where the database is and how to read it."""

    uri: str = "mongodb://127.0.0.1:27217/"
    database: str = "bmc-cotizaciones"
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    server_selection_timeout_ms: int = Field(default=5000, ge=100)
    socket_timeout_ms: int = Field(default=60_000, ge=100)
    # at most this many MiB/s read by a backup (null: as fast as the server sends), so the
    # chatbot's own queries keep their share of the server (docs/PERFORMANCE.md)
    max_read_mb_per_s: float | None = Field(default=None, gt=0)


class CollectionSettings(_Strict):
    """Per-collection knowledge the engine cannot guess."""

    timestamp_field: str | None = None
    required_fields: dict[str, FieldType] = Field(default_factory=dict)
    merge_keys: dict[str, str] = Field(default_factory=dict)


def default_collections() -> dict[str, CollectionSettings]:
    """The chatbot's five collections as ``backup_config.json`` ships them.

    Used when a configuration names no collections (or there is no file at all): backing up
    nothing, or scanning dates as text, is never what someone running this project wants.
    """
    updated = "updated_at"
    return {
        "conversations": CollectionSettings(
            timestamp_field=updated,
            required_fields={"session_id": "string", "messages": "array", "created_at": "date"},
            merge_keys={"messages": "message_id"},
        ),
        "quotes": CollectionSettings(
            timestamp_field=updated,
            required_fields={"quote_id": "string", "session_id": "string", "items": "array"},
        ),
        "sessions": CollectionSettings(
            timestamp_field=updated, required_fields={"session_id": "string"}
        ),
        "context": CollectionSettings(
            timestamp_field=updated, required_fields={"session_id": "string"}
        ),
        "analytics": CollectionSettings(required_fields={"event": "string", "timestamp": "date"}),
    }


class StorageSettings(_Strict):
    """Where backups are written."""

    backup_dir: str = "backups"
    dir_mode: int = 0o755
    file_mode: int = 0o600
    # A second copy at an fsspec URL (s3://bucket/bmc, gs://..., sftp://host/path, file:///mnt/nas);
    # backups are published locally first, then uploaded (docs/STORAGE.md).
    remote_url: str | None = None
    remote_options: dict[str, Any] = Field(default_factory=dict)
    # s3:// only: every object pushed is locked this many days (S3 Object Lock; the bucket must
    # have it enabled), so no one can delete a backup's copy before then (docs/STORAGE.md)
    remote_object_lock_days: int | None = Field(default=None, ge=1, le=36500)
    remote_object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"

    @field_validator("dir_mode", "file_mode", mode="before")
    @classmethod
    def _octal(cls, v: object) -> object:
        """JSON has no octal literals, so modes are written as strings like ``"0600"``."""
        if isinstance(v, str):
            try:
                return int(v, 8)
            except ValueError:
                raise ValueError(f"a file mode is an octal string like '0600', not {v!r}") from None
        return v


class EncryptionSettings(_Strict):
    """Key sources. The key itself never lives in this file."""

    key_file: str | None = None
    segment_size: int = Field(default=1 << 20, ge=4096, le=64 << 20)


class CompressionSettings(_Strict):
    """zstd level: 3 is zstd's own default and a good speed/ratio balance for BSON."""

    level: int = Field(default=3, ge=1, le=19)


class FilesSettings(_Strict):
    """The chatbot's files: knowledge base, configuration and ``.env``."""

    root: str = "chatbot_files"
    include: list[str] = Field(
        default_factory=lambda: [
            "conocimiento_consolidado.json",
            "base_conocimiento_exportada.json",
            "config.py",
            ".env",
            "kb_populated*.json",
        ]
    )
    exclude: list[str] = Field(default_factory=list)


class RestoreSettings(_Strict):
    """How restores write."""

    batch_size: int = Field(default=1000, ge=1, le=100_000)
    default_strategy: Strategy = Strategy.skip_duplicates


class SmtpSettings(_Strict):
    """E-mail alerts; the password comes from ``BMC_SMTP_PASSWORD``."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    sender: str
    recipients: list[str]
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None


class AlertSettings(_Strict):
    """Thresholds and channels of the alerting sensors (docs/ALERTS.md)."""

    stale_full_hours: float = Field(default=24.0, gt=0)
    late_hours: float = Field(default=2.0, gt=0)
    min_free_percent: float = Field(default=10.0, ge=0, le=100)
    # `status --check` and `doctor`: the Dagster daemon is down when its heartbeat is older
    daemon_heartbeat_max_age_s: float = Field(default=300.0, gt=0)
    # the daily report through every channel (cron, UTC), so silence is never taken for health;
    # null turns it off
    daily_report: str | None = "0 7 * * *"
    log_file: str = "logs/alerts.jsonl"
    # past this size the log becomes part .1 (.2 ... .5 older, then gone); null: never
    log_rotate_bytes: int | None = Field(default=8 * 1024 * 1024, ge=4096)
    email: SmtpSettings | None = None
    ui_url: str = "http://127.0.0.1:3000"


class DrillSettings(_Strict):
    """The daily restore drill (docs/RESTORE.md, "The restore drill")."""

    schedule: str = "0 4 * * *"  # cron, UTC: after the 02:00 full and the 03:00 retention
    # the scratch database the drill restores into; default "<mongodb.database>_drill"
    database: str | None = None
    log_file: str = "logs/drills.jsonl"
    max_age_hours: float = Field(default=48.0, gt=0)  # `status --check` fails past this

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"drill.schedule {v!r} is not a five-field cron expression")
        return v


class ScheduleSettings(_Strict):
    """When the scheduled jobs run (UTC), and the first day the backup assets have partitions for.

    The restore drill's time is ``drill.schedule`` and the daily report's ``alerts.daily_report``.
    """

    # the first partition; null: the day of the oldest backup in storage.backup_dir (today if
    # there is none), so the UI never lists months of "missing" backups nobody could have taken
    start_date: date | None = None
    full_backup_at: str = "02:00"  # HH:MM, UTC: the daily full backup
    incremental_every_hours: Literal[1, 2, 3, 4, 6, 8, 12] = 6  # partitions start at 00:00 UTC
    retention: str = "0 3 * * *"  # cron: an hour after the full, so the day's full is there
    health: str = "0 * * * *"  # cron

    @field_validator("full_backup_at")
    @classmethod
    def _time(cls, v: str) -> str:
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", v)
        if m is None:
            raise ValueError(f"schedules.full_backup_at {v!r} is not a time like '02:00' (UTC)")
        return v

    @field_validator("retention", "health")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is not a five-field cron expression like '0 3 * * *'")
        return v

    @property
    def full_hour_minute(self) -> tuple[int, int]:
        hour, minute = self.full_backup_at.split(":")
        return int(hour), int(minute)


class RetentionSettings(_Strict):
    """How many backups to keep (restic 'forget' rules; see docs/RETENTION.md)."""

    daily: int = Field(default=30, ge=0)
    weekly: int = Field(default=12, ge=0)
    monthly: int = Field(default=12, ge=0)
    blob_grace_hours: float = Field(default=24.0, ge=0)


class ScannerSettings(_Strict):
    """Where the recovery scanner looks for stray backups and exports, and what it masks."""

    directories: list[str] = Field(
        default_factory=lambda: [
            "backups",
            "exportaciones",
            "exports",
            "data",
            ".whatsapp_temp",
            ".",
        ]
    )
    patterns: list[str] = Field(
        default_factory=lambda: [
            "conversation*.json",
            "backup*.json",
            "export*.json",
            "kb_populated*.json",
            "recovery_report*.json",
        ]
    )
    sensitive_fields: list[str] = Field(
        default_factory=lambda: ["phone", "user_phone", "email", "name"]
    )
    samples: int = Field(default=3, ge=0, le=50)
    workers: int = Field(default=2, ge=1, le=64)
    output_dir: str = "recovery_reports"


class DevDbSettings(_Strict):
    """The embedded MongoDB-compatible server used by the demo and the tests."""

    port: int = Field(default=27217, ge=1024, le=65535)
    data_dir: str = ".bmc/devdb"
    tools_dir: str = ".tools"
    oplog: bool = True  # replica set rs0 with an emulated oplog, for `bmc-backup capture`


class ApiSettings(_Strict):
    """The recovery HTTP API (``bmc-backup api serve``): listener, TLS, tokens, limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: str | None = None
    tls_key: str | None = None
    tokens_file: str = ".bmc/api_tokens.json"
    # per token and per client address, in the notation of the ``limits`` library
    rate_limit_get: str = "10/15 minutes"
    rate_limit_post: str = "5/15 minutes"
    max_body_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    hsts_max_age: int = Field(default=31_536_000, ge=0)
    # a connection must send its request's headers, then its body, within these (slow clients
    # would otherwise hold connections open as long as they like)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed; empty:
    # the peer address is the client (rate limits and the audit log use it)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (like 10.0.0.5 or 10.0.0.0/24); "
                    "name the proxies one by one, '*' would let any client choose its address"
                ) from None
        return v

    @field_validator("rate_limit_get", "rate_limit_post")
    @classmethod
    def _rate(cls, v: str) -> str:
        try:
            limits.parse(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a rate like '10/15 minutes' or '5 per hour'") from None
        return v


class CaptureSettings(_Strict):
    """Continuous capture of the change log (`bmc-backup capture`, docs/CAPTURE.md)."""

    # true: capture is expected to run, and `status --check` fails when it lags or stopped
    enabled: bool = False
    segment_seconds: float = Field(default=30.0, ge=1, le=3600)  # a segment is sealed this often
    max_lag_seconds: float = Field(default=120.0, gt=0)  # newest sealed time older: an alert
    source: Literal["auto", "oplog", "change-stream"] = "auto"


class AuditSettings(_Strict):
    """The hash-chained audit log of every operation (API, command line, Dagster jobs)."""

    path: str = ".bmc/audit.log"
    # the current file becomes part audit.log.000001, .000002, ... at this size or this age
    # (null: never); the chain runs across the parts, and `audit verify` walks them all
    rotate_bytes: int | None = Field(default=16 * 1024 * 1024, ge=4096)
    rotate_days: float | None = Field(default=30.0, gt=0)


class Settings(_Strict):
    """Everything the project can be told, parsed from ``backup_config.json``."""

    mongodb: MongoSettings = Field(default_factory=MongoSettings)
    collections: dict[str, CollectionSettings] = Field(default_factory=default_collections)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    restore: RestoreSettings = Field(default_factory=RestoreSettings)
    scanner: ScannerSettings = Field(default_factory=ScannerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    drill: DrillSettings = Field(default_factory=DrillSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    # Secrets of the alert channels, from the environment only; never in repr or in a dump.
    smtp_password: str | None = Field(default=None, repr=False, exclude=True)
    slack_webhook_url: str | None = Field(default=None, repr=False, exclude=True)
    discord_webhook_url: str | None = Field(default=None, repr=False, exclude=True)
    devdb: DevDbSettings = Field(default_factory=DevDbSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # Extra API token hashes from the environment (BMC_API_TOKENS), beside the tokens file.
    api_tokens_env: str | None = Field(default=None, repr=False, exclude=True)
    # Dagster's instance directory for runs launched by the command line ($DAGSTER_HOME wins).
    dagster_home: str = ".bmc/dagster"
    # Key material from the environment; kept out of repr so it never reaches a log.
    backup_key: str | None = Field(default=None, repr=False, exclude=True)
    # Directory that relative paths in the file are resolved against.
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("collections")
    @classmethod
    def _collection_names(cls, v: dict[str, CollectionSettings]) -> dict[str, CollectionSettings]:
        for name in v:
            check_collection_name(name)
        return v

    def path(self, value: str) -> Path:
        """Resolve a configured path relative to the configuration file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def backup_dir(self) -> Path:
        return self.path(self.storage.backup_dir)

    @property
    def files_root(self) -> Path:
        return self.path(self.files.root)

    def collection(self, name: str) -> CollectionSettings:
        """Settings of one collection; a collection not in the file gets the defaults."""
        check_collection_name(name)
        return self.collections.get(name, CollectionSettings())


def check_collection_name(name: str) -> str:
    """Refuse names that MongoDB would refuse or that could escape a backup directory."""
    if (
        not COLLECTION_NAME_RE.match(name)
        or ".." in name
        or name.startswith("system.")
        or name.endswith((".index", ".tombstones"))  # would collide with another's archive names
    ):
        raise ConfigError(
            f"invalid collection name {name!r}: use letters, digits, '_', '-' or '.', "
            "start with a letter or '_', at most 120 characters, no 'system.' prefix, "
            "not ending in '.index' or '.tombstones'"
        )
    return name


# Environment variable -> (section, field). These are the only variables the project reads.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "MONGODB_URI": ("mongodb", "uri"),
    "BMC_DATABASE": ("mongodb", "database"),
    "BMC_BACKUP_DIR": ("storage", "backup_dir"),
    "BMC_REMOTE_URL": ("storage", "remote_url"),
    "BMC_FILES_ROOT": ("files", "root"),
    "BMC_BACKUP_KEY_FILE": ("encryption", "key_file"),
    "DAGSTER_HOME": ("", "dagster_home"),
}


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key {loc!r}: remove it or check its spelling (docs/CONFIG.md)")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read the configuration file and apply environment overrides.

    The file is ``path``, else ``$BMC_CONFIG``, else ``backup_config.json`` in the current
    directory; a missing default file means "all defaults", a missing named file is an error.
    """
    env = os.environ if env is None else env
    named = path or env.get("BMC_CONFIG")
    cfg_path = Path(named) if named else Path(DEFAULT_CONFIG_NAME)
    data: dict[str, object] = {}
    if cfg_path.exists():
        try:
            loaded = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{cfg_path}: cannot read configuration: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: the top level must be a JSON object")
        data = loaded
        data.pop("$comment", None)
    elif named:
        raise ConfigError(
            f"configuration file {cfg_path} does not exist (set by BMC_CONFIG or --config)"
        )

    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var) and not section:
            data[key] = env[var]
        elif env.get(var):
            sect = data.setdefault(section, {})
            if not isinstance(sect, dict):
                raise ConfigError(f"{cfg_path}: {section!r} must be an object")
            sect[key] = env[var]
    data["backup_key"] = env.get("BMC_BACKUP_KEY") or None
    data["api_tokens_env"] = env.get("BMC_API_TOKENS") or None
    data["smtp_password"] = env.get("BMC_SMTP_PASSWORD") or None
    data["slack_webhook_url"] = env.get("BMC_SLACK_WEBHOOK_URL") or None
    data["discord_webhook_url"] = env.get("BMC_DISCORD_WEBHOOK_URL") or None
    data["base_dir"] = str(cfg_path.resolve().parent) if cfg_path.exists() else str(Path.cwd())
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(str(cfg_path), exc)) from exc
