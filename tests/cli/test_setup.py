"""``bmc-backup setup --home DIR``: a deployment from nothing, idempotent, and careful with keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.engine.crypto import write_key_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()
            and "audit.log" not in p.name}  # fmt: skip


def test_setup_from_nothing_then_a_backup_with_only_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, units = tmp_path / "srv", tmp_path / "units"
    for var in ("BMC_BACKUP_KEY", "BMC_BACKUP_KEY_FILE", "DAGSTER_HOME", "BMC_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    args = ["setup", "--home", str(home), "--systemd", str(units), "--self-signed"]
    assert main([*args, "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert "would write" in planned and "would create the backup key" in planned
    assert not home.exists()  # a dry run writes nothing

    assert main([*args, "--yes"]) == 0
    out = capsys.readouterr().out
    token = out.split("admin API token (shown once, stored only as a hash): ")[1].split()[0]
    assert token.startswith("bmc_")
    cfg = json.loads((home / "backup_config.json").read_text())
    assert cfg["encryption"]["key_file"] == "keys/backup.key" and cfg["dagster_home"] == "dagster"
    assert _mode(home / "keys" / "backup.key") == 0o600
    assert _mode(home / "backups") == 0o755 and _mode(home / "logs") == 0o755
    assert _mode(home / "dagster") == 0o700 and _mode(home / "tls" / "api.key") == 0o600
    daemon = (units / "bmc-dagster-daemon.service").read_text()
    assert "Restart=on-failure" in daemon and "NoNewPrivileges=yes" in daemon
    assert f"DAGSTER_HOME={home / 'dagster'}" in daemon
    assert token not in json.dumps(_snapshot(home).get(".bmc/api_tokens.json", b"").decode())

    # the configuration is all a command needs
    monkeypatch.setenv("MONGODB_URI", "mongomock://setup")
    config = ["--config", str(home / "backup_config.json")]
    assert main([*config, "seed", "--conversations", "5", "--no-files"]) == 0
    assert main([*config, "backup", "--no-files", "--json"]) == 0
    capsys.readouterr()
    assert list((home / "backups").rglob("backup_full_*.json"))

    # a second setup changes nothing
    before = _snapshot(home)
    assert main([*args, "--yes"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _snapshot(home) == before


def test_setup_refuses_a_different_config_or_key_and_names_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "srv"
    assert main(["setup", "--home", str(home), "--yes"]) == 0
    key = (home / "keys" / "backup.key").read_bytes()
    capsys.readouterr()
    assert main(["setup", "--home", str(home), "--yes", "--database", "other"]) == 2
    assert "mongodb.database" in capsys.readouterr().err
    assert main(["setup", "--home", str(home), "--yes", "--database", "other", "--force"]) == 0
    assert json.loads((home / "backup_config.json").read_text())["mongodb"]["database"] == "other"
    assert (home / "keys" / "backup.key").read_bytes() == key  # --force never touches the key
    other = tmp_path / "other.key"
    write_key_file(other)
    capsys.readouterr()
    assert main(["setup", "--home", str(home), "--yes", "--database", "other",
                 "--key-file", str(other)]) == 3  # fmt: skip
    assert "never replaces a key" in capsys.readouterr().err
    assert (home / "keys" / "backup.key").read_bytes() == key
    capsys.readouterr()
    uri = "mongodb://bmc:pw@db:27017/"
    assert main(["setup", "--home", str(tmp_path / "x"), "--yes", "--mongodb-uri", uri]) == 2
    assert "holds a password" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_dagster_on_postgresql_keeps_its_url_out_of_every_configuration_file(
    tmp_path: Path,
) -> None:
    home = tmp_path / "srv"
    url = "postgresql://dagster:s3cret@127.0.0.1:5432/dagster"
    assert main(["setup", "--home", str(home), "--yes", "--postgres-url", url]) == 0
    assert _mode(home / "service.env") == 0o600
    env = (home / "service.env").read_text()
    assert "BMC_DAGSTER_PG_URL=postgresql+psycopg2://dagster:s3cret@127.0.0.1:5432/dagster" in env
    instance = (home / "dagster" / "dagster.yaml").read_text()
    assert "s3cret" not in instance and "env: BMC_DAGSTER_PG_URL" in instance
    assert "QueuedRunCoordinator" in instance and "applyLimitPerUniqueValue" in instance
    assert "s3cret" not in (home / "backup_config.json").read_text()
