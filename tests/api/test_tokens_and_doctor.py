"""API tokens (hashes only, 0600, env entries) and ``bmc-backup doctor``'s findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.api.tokens import TokenStore, hash_token
from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.doctor import run_doctor
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import ConfigError
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.store import BackupStore
from tests.support import unreachable, write_config


def test_tokens_are_stored_as_hashes_in_a_private_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    secret, token = store.create("alice")
    assert secret.startswith("bmc_") and len(secret) >= 40
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    text = store.path.read_text()
    assert secret not in text and hash_token(secret) in text
    assert store.authenticate(secret) == token
    assert store.authenticate(secret + "x") is None
    with pytest.raises(ConfigError, match="exists"):
        store.create("alice")
    store.path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        store.authenticate(secret)
    store.path.chmod(0o600)
    assert store.revoke("alice") and store.authenticate(secret) is None


def test_tokens_from_the_environment(tmp_path: Path) -> None:
    digest = hash_token("bmc_from-env")
    store = TokenStore(tmp_path / "none.json", f"ci:admin:{digest}, dash:viewer:{'0' * 64}")
    found = store.authenticate("bmc_from-env")
    assert found is not None and (found.name, found.role, found.source) == ("ci", "admin", "env")
    with pytest.raises(ConfigError, match="name:role:sha256hex"):
        TokenStore(tmp_path / "none.json", "ci:admin:short").tokens()
    with pytest.raises(ConfigError, match="role 'root'"):
        TokenStore(tmp_path / "none.json", f"ci:root:{digest}").tokens()


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in report["checks"]:
        # a later check of the same name (a second permissions finding) wins if it failed
        if c["name"] not in out or c["status"] == "fail":
            out[c["name"]] = c
    return out


def test_doctor_passes_a_healthy_deployment_and_names_each_fix(
    settings: Settings, keyring: KeyRing, mongo_db: Any
) -> None:
    seed_database(mongo_db, conversations=10, seed=2)
    BackupEngine(settings, mongo_db, BackupStore(settings.backup_dir), keyring).run(
        "full", include_files=False
    )
    report = run_doctor(settings)
    checks = _checks(report)
    assert report["ok"], report
    assert {c: checks[c]["status"] for c in ("key", "permissions", "free space", "mongodb")} == {
        "key": "ok",
        "permissions": "ok",
        "free space": "ok",
        "mongodb": "ok",
    }
    assert checks["dagster"]["status"] == "ok"
    assert checks["api tokens"]["status"] == "warn"  # none created yet: the API would refuse all

    manifest = next(settings.backup_dir.rglob("backup_full_*.json"))
    manifest.chmod(0o644)
    report = run_doctor(settings)
    perms = _checks(report)["permissions"]
    assert not report["ok"] and perms["status"] == "fail"
    assert "1 file(s) not 600" in perms["message"] and "chmod 600" in perms["fix"]
    manifest.chmod(0o600)

    report = run_doctor(unreachable(settings))
    mongo = _checks(report)["mongodb"]
    assert not report["ok"] and mongo["status"] == "fail" and "MONGODB_URI" in mongo["fix"]


def test_doctor_command_exit_code_and_key_finding(
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("BMC_BACKUP_KEY", "BMC_BACKUP_KEY_FILE", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    cfg = write_config(settings, tmp_path / "config.json")
    # the config file holds no key (keys never go there) and none is in the environment
    assert main(["--config", str(cfg), "doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    key = _checks(report)["key"]
    assert key["status"] == "fail" and "keygen" in key["fix"]
