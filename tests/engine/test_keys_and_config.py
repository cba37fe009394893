"""Keys are never silently missing or exposed; configuration errors name the key at fault."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import load_settings
from bmc_pipeline.engine.crypto import load_keyring, read_key_file, write_key_file
from bmc_pipeline.engine.errors import ConfigError, KeyConfigError
from tests.support import ROOT


def test_key_file_readable_by_others_is_refused_with_chmod_advice(tmp_path: Path) -> None:
    p = tmp_path / "backup.key"
    write_key_file(p)
    p.chmod(0o644)
    with pytest.raises(KeyConfigError, match=r"chmod 600 .*backup.key"):
        read_key_file(p)


def test_keygen_writes_a_0600_file_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no backup_config.json here: defaults, audit log under tmp_path
    p = tmp_path / "k"
    assert main(["keygen", "--out", str(p)]) == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    first = read_key_file(p)
    assert main(["keygen", "--out", str(p)]) == 3  # KeyConfigError: refuses to overwrite
    assert read_key_file(p) == first


def test_keygen_add_rotates_new_key_first_old_keys_kept(tmp_path: Path) -> None:
    p = tmp_path / "k"
    old = write_key_file(p)
    new = write_key_file(p, add=True)
    ring = load_keyring(None, p)
    assert ring.primary.key_id == new.key_id
    assert ring.key_ids == [new.key_id, old.key_id]
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_env_keys_come_before_key_file_keys(tmp_path: Path) -> None:
    p = tmp_path / "k"
    file_key = write_key_file(p)
    env_material = os.urandom(32)
    ring = load_keyring(base64.b64encode(env_material).decode(), p)
    assert ring.key_ids[1] == file_key.key_id
    assert ring.primary.material == env_material


def test_malformed_key_is_refused_without_echoing_it() -> None:
    secret = "bm90IGEga2V5IGJ1dCBzZWNyZXQ="
    with pytest.raises(KeyConfigError) as exc:
        load_keyring(secret, None)
    assert secret not in str(exc.value)


def test_keyring_repr_shows_ids_not_material() -> None:
    material = os.urandom(32)
    ring = load_keyring(base64.b64encode(material).decode(), None)
    assert material.hex() not in repr(ring) and base64.b64encode(material).decode() not in repr(
        ring
    )
    assert ring.primary.key_id in repr(ring)


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"mongodb": {"urii": "x"}}))
    with pytest.raises(ConfigError, match=r"unknown key 'mongodb.urii'"):
        load_settings(cfg, env={})


def test_bad_config_value_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"compression": {"level": 99}}))
    with pytest.raises(ConfigError, match=r"compression.level"):
        load_settings(cfg, env={})


def test_bad_collection_name_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"collections": {"../etc": {}}}))
    with pytest.raises(ConfigError, match="invalid collection name"):
        load_settings(cfg, env={})


def test_environment_overrides_named_fields(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"storage": {"backup_dir": "b", "file_mode": "0640"}}))
    s = load_settings(
        cfg,
        env={
            "MONGODB_URI": "mongodb://h:1/",
            "BMC_DATABASE": "d",
            "BMC_BACKUP_DIR": "/x/y",
            "BMC_BACKUP_KEY": "s3cr3t-key-text",
        },
    )
    assert s.mongodb.uri == "mongodb://h:1/"
    assert s.mongodb.database == "d"
    assert s.backup_dir == Path("/x/y")
    assert s.storage.file_mode == 0o640
    assert s.backup_key == "s3cr3t-key-text"
    assert "s3cr3t" not in repr(s)


def test_project_config_file_is_complete_and_valid() -> None:
    root = ROOT
    s = load_settings(root / "backup_config.json", env={})
    assert set(s.collections) == {"conversations", "quotes", "sessions", "context", "analytics"}


def test_without_a_configuration_the_shipped_collections_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file (or one that names no collections) means the five collections, exactly as
    backup_config.json describes them: not a backup of nothing."""
    root = ROOT
    shipped = load_settings(root / "backup_config.json", env={}).collections
    monkeypatch.chdir(tmp_path)  # no backup_config.json here
    assert load_settings(env={}).collections == shipped
    (tmp_path / "other.json").write_text(json.dumps({"mongodb": {"database": "x"}}))
    assert load_settings(tmp_path / "other.json", env={}).collections == shipped


def test_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.json", env={})


@pytest.mark.parametrize("name", ["x.index", "x.tombstones", "system.users", "a/b", "", "a..b"])
def test_collection_names_that_could_collide_or_escape_are_refused(name: str) -> None:
    from bmc_pipeline.config import check_collection_name

    with pytest.raises(ConfigError, match="invalid collection name"):
        check_collection_name(name)
