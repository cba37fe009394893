"""``bmc-backup setup --home DIR``: a deployment from nothing, and the same command to check it.

It writes ``DIR/backup_config.json`` (every path in it relative to ``DIR``, so ``--config
DIR/backup_config.json`` is all a command needs), the directories, the backup key (0600), the
Dagster instance configuration, an admin API token (shown once), TLS material if asked, and
systemd units if asked. Run again, it changes nothing and says so; it never overwrites a key or a
configuration that differs from what it would write (it names the differences; ``--force``
replaces the configuration, never a key). ``--dry-run`` prints what it would do.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.audit import audit_log_for, current_user
from bmc_pipeline.engine.crypto import read_key_file, write_key_file
from bmc_pipeline.engine.errors import ConfigError, KeyConfigError
from bmc_pipeline.engine.mongo import split_password
from bmc_pipeline.jobs.history import INSTANCE_CONFIG

KEY_FILE = "keys/backup.key"
PG_ENV = "BMC_DAGSTER_PG_URL"  # the PostgreSQL URL (with its password) stays in the environment
UNITS = ("bmc-dagster-daemon", "bmc-dagster-webserver", "bmc-api", "bmc-capture")


@dataclass
class SetupOptions:
    database: str = "bmc-cotizaciones"
    mongodb_uri: str | None = None
    files_root: str | None = None
    remote_url: str | None = None
    postgres_url: str | None = None  # into service.env (0600), never into a configuration file
    self_signed: bool = False
    systemd: Path | None = None
    user: str = "bmc"
    force: bool = False
    key_file: Path | None = None  # an existing key to install (a restore of a lost machine)


@dataclass
class SetupReport:
    home: Path
    dry_run: bool
    steps: list[str] = field(default_factory=list)
    token: str | None = None  # shown once
    key_id: str | None = None

    def did(self, what: str) -> None:
        self.steps.append(("would " + what) if self.dry_run else what)

    def as_dict(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "dry_run": self.dry_run,
            "steps": self.steps,
            "key_id": self.key_id,
            "api_token": self.token,
        }


def desired_config(opts: SetupOptions) -> dict[str, Any]:
    """The configuration ``setup`` writes: the defaults, every path relative to the home."""
    cfg: dict[str, Any] = Settings().model_dump(mode="json")
    cfg["dagster_home"] = "dagster"  # the instance beside the configuration (and in the units)
    cfg["mongodb"]["database"] = opts.database
    if opts.mongodb_uri:
        uri, password = split_password(opts.mongodb_uri)
        if password is not None:
            raise ConfigError(
                "--mongodb-uri holds a password: give the URI without it, and put the whole URI "
                "in MONGODB_URI in the service's environment file instead"
            )
        cfg["mongodb"]["uri"] = uri
    cfg["storage"]["dir_mode"], cfg["storage"]["file_mode"] = "0755", "0600"
    cfg["storage"]["remote_url"] = opts.remote_url
    cfg["encryption"]["key_file"] = KEY_FILE
    if opts.files_root:
        cfg["files"]["root"] = opts.files_root
    if opts.self_signed:
        cfg["api"]["tls_cert"], cfg["api"]["tls_key"] = "tls/api.pem", "tls/api.key"
    cfg["schedules"]["start_date"] = datetime.now(timezone.utc).date().isoformat()
    return cfg


def _differences(old: Any, new: Any, at: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            if k == "schedules" and at == "":
                continue  # its start_date is the day of the first setup: never a difference
            out += _differences(old.get(k), new.get(k), f"{at}.{k}" if at else k)
        return out
    return [] if old == new else [at]


def run_setup(home: Path, opts: SetupOptions, *, dry_run: bool) -> SetupReport:
    """Bring ``home`` to a working deployment; what it did (or would do) in ``report.steps``."""
    home = home.resolve()
    report = SetupReport(home, dry_run)
    config_path = home / "backup_config.json"
    cfg = desired_config(opts)
    if config_path.exists():
        try:
            old = json.loads(config_path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{config_path} is not JSON ({exc}); fix or remove it") from exc
        cfg["schedules"] = old.get("schedules", cfg["schedules"])  # keep the first day
        differ = _differences(old, cfg)
        if differ and not opts.force:
            raise ConfigError(
                f"{config_path} exists and differs from what setup would write in "
                f"{', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}; keep it (run setup "
                "with the same flags) or replace it with --force (the key is never replaced)"
            )
        if differ:
            report.did(f"replace {config_path} (differed in {', '.join(differ[:8])})")
    else:
        report.did(f"write {config_path}")
    for d in ("backups", "logs", ".bmc", "keys", "dagster"):
        if not (home / d).is_dir():
            report.did(f"create {home / d}/")
    key = home / KEY_FILE
    given = read_key_file(opts.key_file) if opts.key_file else None
    if key.exists():
        keys = read_key_file(key)  # refuses a key file readable by others, or malformed
        report.key_id = keys[0].key_id
        if given is not None and [k.key_id for k in given] != [k.key_id for k in keys]:
            raise KeyConfigError(
                f"{key} holds key(s) {', '.join(k.key_id for k in keys)}, not "
                f"{', '.join(k.key_id for k in given)} from {opts.key_file}: setup never replaces "
                "a key (backups written with it would be lost); rotate with 'bmc-backup keygen "
                "--add' or copy the old key file in by hand"
            )
    elif given is not None:
        report.key_id = given[0].key_id
        report.did(f"install the key(s) of {opts.key_file} as {key} (0600)")
    else:
        report.did(f"create the backup key {key} (0600)")
    if not (home / "workspace.yaml").exists():
        report.did(f"write {home / 'workspace.yaml'}")
    if not (home / "dagster" / "dagster.yaml").exists():
        report.did(f"write {home / 'dagster' / 'dagster.yaml'}")
    tokens = home / ".bmc" / "api_tokens.json"
    if not tokens.exists():
        report.did(f"create an admin API token in {tokens}")
    if opts.self_signed and not (home / "tls" / "api.pem").exists():
        report.did(f"create a self-signed TLS certificate in {home / 'tls'}/")
    if opts.postgres_url and _service_env(home, opts) != _read(home / "service.env"):
        report.did(f"write {PG_ENV} into {home / 'service.env'} (0600)")
    if opts.systemd is not None:
        for unit in UNITS:
            target = opts.systemd / f"{unit}.service"
            if not target.exists() or target.read_text() != _unit(unit, home, opts):
                report.did(f"write {target}")
    if dry_run:
        return report
    _apply(home, opts, cfg, report)
    return report


def _apply(home: Path, opts: SetupOptions, cfg: dict[str, Any], report: SetupReport) -> None:
    home.mkdir(parents=True, exist_ok=True)
    for d, mode in (("backups", 0o755), ("logs", 0o755), (".bmc", 0o700), ("keys", 0o700)):
        (home / d).mkdir(exist_ok=True)
        (home / d).chmod(mode)
    (home / "dagster").mkdir(exist_ok=True)
    (home / "dagster").chmod(0o700)
    config_path = home / "backup_config.json"
    text = json.dumps(cfg, indent=2, ensure_ascii=False) + "\n"
    if not config_path.exists() or config_path.read_text() != text:
        write_atomic(config_path, text.encode(), mode=0o644)
    key = home / KEY_FILE
    if not key.exists() and opts.key_file is not None:
        write_atomic(key, opts.key_file.read_bytes(), mode=0o600)
    elif not key.exists():
        report.key_id = write_key_file(key).key_id
    workspace_file(home)
    instance = home / "dagster" / "dagster.yaml"
    if not instance.exists():
        write_atomic(instance, _instance_config(opts).encode(), mode=0o600)
    settings = load_settings(str(config_path), env={})
    store = TokenStore.for_settings(settings)
    if not store.path.exists():
        report.token = store.create("admin", "admin")[0]
    if opts.self_signed and not (home / "tls" / "api.pem").exists():
        _self_signed(home / "tls")
    if opts.postgres_url and _service_env(home, opts) != _read(home / "service.env"):
        write_atomic(home / "service.env", _service_env(home, opts).encode(), mode=0o600)
    if opts.systemd is not None:
        opts.systemd.mkdir(parents=True, exist_ok=True)
        for unit in UNITS:
            target = opts.systemd / f"{unit}.service"
            body = _unit(unit, home, opts)
            if not target.exists() or target.read_text() != body:
                write_atomic(target, body.encode(), mode=0o644)
    audit_log_for(settings).append(
        actor=current_user(), via="cli", action="setup",
        params={"home": str(home), "steps": report.steps},
        extra={"key_id": report.key_id},
    )  # fmt: skip


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def dagster_pg_url(url: str) -> str:
    """``url`` with the psycopg2 driver named: dagster-postgres installs psycopg2, and
    SQLAlchemy 2.1 would otherwise look for psycopg 3 for a plain ``postgresql://``."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg2://" + url[len(plain) :]
    return url


def _service_env(home: Path, opts: SetupOptions) -> str:
    """``service.env`` with the PostgreSQL URL set (other lines someone added are kept)."""
    kept = [ln for ln in _read(home / "service.env").splitlines() if not ln.startswith(PG_ENV)]
    return "\n".join([*kept, f"{PG_ENV}={dagster_pg_url(str(opts.postgres_url))}"]) + "\n"


def _instance_config(opts: SetupOptions) -> str:
    """SQLite under the home by default; with ``postgres``, PostgreSQL storage read from the
    environment and a run queue that never runs two restores (or two backups) at once."""
    if not opts.postgres_url:
        return INSTANCE_CONFIG
    return (
        INSTANCE_CONFIG
        + f"""
# needs the postgres extra (pip install -e ".[postgres]") and {PG_ENV} in the environment
storage:
  postgres:
    postgres_url:
      env: {PG_ENV}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: bmc/operation
        value: restore
        limit: 1
      - key: bmc/operation
        value: drill
        limit: 1
      - key: bmc/backup_type
        value: {{applyLimitPerUniqueValue: true}}
        limit: 1
run_monitoring:
  enabled: true
"""
    )


def _unit(name: str, home: Path, opts: SetupOptions) -> str:
    exe = Path(sys.executable).parent
    commands = {
        "bmc-dagster-daemon": f"{exe / 'dagster-daemon'} run -w {home / 'workspace.yaml'}",
        "bmc-dagster-webserver": f"{exe / 'dagster-webserver'} -h 127.0.0.1 -p 3000 "
        f"-w {home / 'workspace.yaml'}",
        "bmc-api": f"{exe / 'bmc-backup'} --config {home / 'backup_config.json'} api serve",
        # continuous capture (docs/CAPTURE.md): SIGTERM seals what it holds before it exits
        "bmc-capture": f"{exe / 'bmc-backup'} --config {home / 'backup_config.json'} capture",
    }
    return f"""[Unit]
Description=bmc-backup: {name.removeprefix("bmc-")}
After=network-online.target
Wants=network-online.target

[Service]
User={opts.user}
WorkingDirectory={home}
Environment=BMC_CONFIG={home / "backup_config.json"}
Environment=DAGSTER_HOME={home / "dagster"}
Environment=BMC_BACKUP_KEY_FILE={home / KEY_FILE}
# MONGODB_URI (with its password){f" and {PG_ENV}" if opts.postgres_url else ""}: in this file, mode 0600
EnvironmentFile=-{home / "service.env"}
UMask=0077
ExecStart={commands[name]}
Restart=on-failure
RestartSec=10
TimeoutStopSec=90
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={home}
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def _self_signed(directory: Path) -> None:
    """A self-signed certificate for the API on this host (replace it with a real one)."""
    import socket

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())])
    now = datetime.now(timezone.utc)
    sans = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(directory / "api.key", pem, mode=0o600)
    write_atomic(directory / "api.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def workspace_file(home: Path) -> None:
    """The ``workspace.yaml`` the Dagster units load (the code location by module name)."""
    text = (
        "load_from:\n  - python_module:\n      module_name: bmc_pipeline.definitions\n"
        "      attribute: defs\n      location_name: bmc_pipeline\n"
    )
    target = home / "workspace.yaml"
    if not target.exists() or target.read_text() != text:
        write_atomic(target, text.encode(), mode=0o644)
