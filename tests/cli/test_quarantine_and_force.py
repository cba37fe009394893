"""``quarantine list|show|export`` decrypt refused documents on demand; ``rollback --force``."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupResult
from tests.support import write_config


@pytest.fixture
def strict_config(mock_settings: Settings, tmp_path: Path) -> str:
    """A configuration in which every quote fails its schema (so a restore quarantines them)."""
    cfg = mock_settings.collection("quotes").model_copy(
        update={"required_fields": {"no_such_field": "string"}}
    )
    strict = mock_settings.model_copy(
        update={"collections": {**mock_settings.collections, "quotes": cfg}}
    )
    return str(write_config(strict, tmp_path / "strict.json"))


def test_refused_documents_are_read_back_only_through_the_quarantine_commands(
    strict_config: str,
    full_backup: BackupResult,
    mock_db: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quotes = mock_db.quotes.count_documents({})
    args = ["--config", strict_config]
    main([*args, "restore", full_backup.backup_id, "--collection", "quotes",
          "--target-collection", "quotes_check", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    qid = report["quarantine_id"]
    assert report["invalid"] == quotes and qid and qid.startswith(tuple("0123456789"))
    assert b"quote" not in Path(report["quarantine_file"]).read_bytes().lower()

    assert main([*args, "quarantine", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [q["quarantine_id"] for q in listed["quarantines"]] == [qid]

    assert main([*args, "quarantine", "show", qid, "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all("no_such_field" in line["reason"] for line in lines)
    assert lines[0]["document"]["_id"]  # whole documents, types kept as Extended JSON

    out = tmp_path / "refused.jsonl"
    assert main([*args, "quarantine", "export", qid, "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == quotes
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    assert main([*args, "quarantine", "show", "../../etc/passwd"]) == 4
    assert "not a quarantine id" in capsys.readouterr().err
    assert main([*args, "quarantine", "show", "20261201T000000Z-quotes-abcdef"]) == 4


def test_rollback_refuses_to_undo_later_changes_without_force(
    mock_settings: Settings,
    full_backup: BackupResult,
    mock_db: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = ["--config", str(write_config(mock_settings, tmp_path / "config.json"))]
    mock_db.quotes.delete_many({})
    assert main([*cfg, "restore", full_backup.backup_id, "--collection", "quotes", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["rollback_id"]
    one = mock_db.quotes.find_one()
    mock_db.quotes.update_one({"_id": one["_id"]}, {"$set": {"status": "changed later"}})
    assert main([*cfg, "rollback", rid]) == 9
    err = capsys.readouterr().err
    assert "1 document(s) the restore wrote were changed after it" in err and "--force" in err
    assert mock_db.quotes.count_documents({"status": "changed later"}) == 1
    assert main([*cfg, "rollback", rid, "--force"]) == 0
    assert mock_db.quotes.count_documents({}) == 0
