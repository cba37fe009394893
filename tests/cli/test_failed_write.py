"""A restore that stops half-way through its writes is rolled back at once, or (with
``--no-auto-rollback``) says how to roll it back; the error names documents by id, never shows
their contents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from tests.support import write_config


@pytest.fixture
def half_bad(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Writes in batches of 2; the third document has a key the server refuses ("$bad")."""
    monkeypatch.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
    restore = settings.restore.model_copy(update={"batch_size": 2})
    s = settings.model_copy(update={"restore": restore})
    docs = [
        {"_id": i, "session_id": f"s-{i}", "messages": [], "phone": "+598 91 234 567"}
        for i in range(4)
    ]
    docs[2]["$bad"] = "refused by the server"
    export = tmp_path / "backup_legacy.json"
    export.write_text(json_util.dumps(docs))
    cfg = str(write_config(s, tmp_path / "config.json"))
    return ["--config", cfg, "restore", str(export), "--collection", "sessions"]


def test_a_write_that_fails_half_way_is_rolled_back_at_once(
    half_bad: list[str], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(half_bad) == 8
    err = capsys.readouterr().err
    assert "the restore stopped while writing" in err and "rolled back from" in err
    assert "document 2: invalid key" in err and "+598" not in err  # ids, never contents
    assert mongo_db["sessions"].count_documents({}) == 0  # nothing of it remains


def test_without_auto_rollback_the_error_says_how_to_undo_it(
    half_bad: list[str], mongo_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*half_bad, "--no-auto-rollback", "--json"]) == 8
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "PartialRestoreError" and error["exit_code"] == 8
    assert mongo_db["sessions"].count_documents({}) == 3  # all but the refused one stay
    rollback_id = error["message"].split("bmc-backup rollback ")[1].split("'")[0]
    cfg = half_bad[1]
    assert main(["--config", cfg, "rollback", rollback_id]) == 0
    assert mongo_db["sessions"].count_documents({}) == 0
