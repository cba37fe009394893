"""The runbook for total loss, end to end against a real server: a new machine with only the key
and the remote copy's URL gets every collection and every file back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.sample_data import seed_database, write_files
from tests.support import write_config

COLLECTIONS = ("analytics", "context", "conversations", "quotes", "sessions")


def test_key_and_remote_url_bring_everything_back_on_a_new_machine(
    settings: Settings,
    mongo_db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = settings.storage.model_copy(update={"remote_url": f"file://{tmp_path / 'offsite'}"})
    s = settings.model_copy(update={"storage": storage})
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    cfg = str(write_config(s, tmp_path / "config.json"))

    def cli(*args: str) -> dict[str, Any]:
        assert main(["--config", cfg, *args, "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out))

    seed_database(mongo_db, 25, seed=12)
    write_files(s.files_root, seed=12)
    cli("backup")  # each backup run copies itself to the remote
    mongo_db["quotes"].delete_one({})
    (s.files_root / "config.py").write_text('MODEL = "changed"\n')
    cli("backup", "--type", "incremental")
    state = {c: sorted(mongo_db[c].find(), key=lambda d: str(d["_id"])) for c in COLLECTIONS}
    files = {p.name: p.read_bytes() for p in s.files_root.iterdir() if p.is_file()}

    # the machine is gone: its backups, its files, its database, its Dagster instance
    shutil.rmtree(s.backup_dir)
    shutil.rmtree(s.files_root)
    shutil.rmtree(s.dagster_home, ignore_errors=True)
    for c in COLLECTIONS:
        mongo_db.drop_collection(c)

    pulled = cli("pull", "--all")
    assert pulled["count"] == 2 and all(p["ok"] for p in pulled["pulled"])
    restored = cli("restore", "latest", "--files")
    assert restored["verified"], restored
    assert {
        c: sorted(mongo_db[c].find(), key=lambda d: str(d["_id"])) for c in COLLECTIONS
    } == state
    for name, content in files.items():
        if name in {f["path"] for f in restored["files"]["files"]}:
            assert (s.files_root / name).read_bytes() == content, name
    assert (s.files_root / "config.py").read_text() == 'MODEL = "changed"\n'
