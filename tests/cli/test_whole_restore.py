"""Everything that is backed up comes back, against a real server: the chatbot's files, all
collections at once with their indexes, at a backup point or a point in time, under one rollback
point."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.crypto import KeyRing, manifest_mac
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore, canonical_json
from tests.support import write_config

COLLECTIONS = ("analytics", "context", "conversations", "quotes", "sessions")


def _state(db: Any) -> dict[str, dict[Any, Any]]:
    return {c: {d["_id"]: d for d in db[c].find()} for c in COLLECTIONS}


def _indexes(db: Any) -> dict[str, list[tuple[str, Any, bool]]]:
    return {
        c: sorted(
            (ix["name"], list(ix["key"].items()), bool(ix.get("unique")))
            for ix in db[c].list_indexes()
        )
        for c in COLLECTIONS
    }


@pytest.fixture
def cli(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    monkeypatch.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    cfg = str(write_config(settings, tmp_path / "config.json"))

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        code = main(["--config", cfg, *args, "--json"])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}

    return run


def _backup(cli: Any, kind: str = "full") -> str:
    code, out = cli("backup", "--type", kind)
    assert code == 0, out
    return str(out["backup_id"])


def test_the_files_come_back_byte_for_byte_with_their_modes_and_roll_back(
    settings: Settings, mongo_db: Any, cli: Any
) -> None:
    root = settings.files_root
    write_files(root, seed=5)
    (root / ".env").chmod(0o600)
    originals = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    bid = _backup(cli)
    (root / "conocimiento_consolidado.json").unlink()
    (root / "base_conocimiento_exportada.json").unlink()
    (root / ".env").unlink()
    (root / "config.py").write_text("CORRUPTED = True\n")

    code, dry = cli("restore-files", bid, "--dry-run")
    assert code == 0 and dry["restored"] == 4 and dry["rollback_id"] is None
    assert not (root / ".env").exists()  # a dry run writes nothing

    code, done = cli("restore-files", bid)
    assert code == 0 and done["verified"], done
    actions = {f["path"]: f["action"] for f in done["files"]}
    assert actions[".env"] == "created" and actions["config.py"] == "replaced"
    assert done["unchanged"] == len(done["files"]) - 4 > 0
    for p, content in originals.items():
        assert p.read_bytes() == content, p  # restored ones and the rest alike
    assert stat.S_IMODE((root / ".env").stat().st_mode) == 0o600

    code, undone = cli("rollback", done["rollback_id"])
    assert code == 0 and undone["verified"], undone
    assert (root / "config.py").read_text() == "CORRUPTED = True\n"
    assert not (root / ".env").exists() and not (root / "conocimiento_consolidado.json").exists()


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/evil", "a/../../b"])
def test_a_manifest_naming_a_path_outside_the_target_is_refused_before_anything_is_written(
    settings: Settings, mongo_db: Any, cli: Any, keyring: KeyRing, bad: str
) -> None:
    write_files(settings.files_root, seed=6)
    bid = _backup(cli)
    (settings.files_root / "config.py").unlink()
    ref = BackupStore(settings.backup_dir).resolve(bid)
    doc = json.loads(ref.manifest_path.read_text())
    files = doc["filesystem"]["files"]
    files[bad] = files["config.py"]
    body = {k: v for k, v in doc.items() if k != "authentication"}
    doc["authentication"]["mac"] = manifest_mac(keyring.primary, canonical_json(body))  # re-signed
    ref.manifest_path.write_text(json.dumps(doc))
    code, out = cli("restore-files", bid)
    assert code == 5 and "is not a plain relative path" in out["error"]["message"]
    assert not (settings.files_root / "config.py").exists()  # nothing written, not even the rest
    assert not (settings.files_root.parent / "outside.txt").exists()


def test_a_whole_backup_comes_back_with_every_index_and_one_rollback_undoes_it(
    settings: Settings, mongo_db: Any, cli: Any
) -> None:
    seed_database(mongo_db, 30, seed=9)
    mongo_db["quotes"].create_index("quote_id", unique=True, name="quote_id_unique")
    before, indexes = _state(mongo_db), _indexes(mongo_db)
    bid = _backup(cli)
    for c in COLLECTIONS:
        mongo_db.drop_collection(c)

    code, report = cli("restore", bid)
    assert code == 0 and report["verified"], report
    assert set(report["collections"]) == set(COLLECTIONS)
    assert _state(mongo_db) == before
    assert _indexes(mongo_db) == indexes
    assert "quote_id_unique" in report["collections"]["quotes"]["indexes_created"]

    code, undone = cli("rollback", report["rollback_id"])
    assert code == 0 and undone["verified"] and set(undone["collections"]) == set(COLLECTIONS)
    assert all(mongo_db[c].count_documents({}) == 0 for c in COLLECTIONS)


def test_a_whole_restore_at_a_point_in_time_across_a_full_and_two_incrementals(
    settings: Settings, mongo_db: Any, cli: Any
) -> None:
    import datetime as dt
    import time

    seed_database(mongo_db, 20, seed=10)
    _backup(cli)
    mongo_db["quotes"].delete_one({})
    mongo_db["sessions"].insert_one(
        {"session_id": "sess-new", "updated_at": dt.datetime.now(dt.timezone.utc)}
    )
    _backup(cli, "incremental")
    at_second = _state(mongo_db)
    time.sleep(1.1)
    point = dt.datetime.now(dt.timezone.utc).isoformat()
    time.sleep(1.1)
    mongo_db["conversations"].delete_many({})
    _backup(cli, "incremental")
    for c in COLLECTIONS:
        mongo_db.drop_collection(c)

    code, report = cli("restore", "latest", "--point-in-time", point)
    assert code == 0 and report["verified"], report
    assert _state(mongo_db) == at_second
    assert os.environ.get("BMC_BACKUP_KEY")
