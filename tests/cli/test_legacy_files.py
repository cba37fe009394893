"""Legacy JSON files never lose a document in silence: documents without ``_id`` get an id derived
from their content (or are refused with ``--require-ids``), and every document read is counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.sample_data import generate
from tests.support import write_config


def _accounted(report: dict[str, Any]) -> None:
    counted = (
        report["inserted"] + report["overwritten"] + report["merged"] + report["skipped"]
        + report["invalid"] + report["filtered_out"]
    )  # fmt: skip
    assert counted == report["read"], report


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Three conversations without _id (as an old export wrote them), a repeat, and a string."""
    convs = [d for name, d in generate(3, seed=41) if name == "conversations"]
    for c in convs:
        c.pop("_id")
    path = tmp_path / "backup_2025-06-01.json"
    body = [*convs, convs[0], "not a conversation"]
    path.write_text(json_util.dumps(body, json_options=json_util.CANONICAL_JSON_OPTIONS))
    return path


def test_documents_without_id_are_restored_once_however_often_the_file_is_restored(
    settings: Settings,
    mongo_db: Any,
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
    cfg = str(write_config(settings, tmp_path / "config.json"))
    args = ["--config", cfg, "restore", str(export), "--collection", "conversations", "--json"]

    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["read"] == 5 and first["generated_ids"] == 4
    assert first["inserted"] == 3 and first["duplicates"] == 1 and first["invalid"] == 1
    assert any("not a document" in e for e in first["errors"])
    assert first["verified"]
    _accounted(first)
    assert mongo_db["conversations"].count_documents({}) == 3

    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["inserted"] == 0 and second["unchanged"] == 3
    _accounted(second)
    sessions = [d["session_id"] for d in mongo_db["conversations"].find()]
    assert len(sessions) == len(set(sessions)) == 3

    assert main([*args, "--require-ids", "--dry-run"]) == 0
    refused = json.loads(capsys.readouterr().out)
    assert refused["invalid"] == 5 and refused["inserted"] == 0
    assert sum("no _id (refused: --require-ids)" in e for e in refused["errors"]) == 4
    _accounted(refused)
