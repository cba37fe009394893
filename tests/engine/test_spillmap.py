"""SpillMap: a dict while small, a temporary SQLite file after; the same answers either way."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.engine import spillmap
from bmc_pipeline.engine.spillmap import SpillMap


@pytest.mark.parametrize("limit", [1_000, 3])
def test_the_same_answers_in_memory_and_spilled(tmp_path: Path, limit: int) -> None:
    m = SpillMap(((b"id-%d" % i, b"h-%d" % i) for i in range(10)), limit=limit, directory=tmp_path)
    assert m.spilled == (limit < 10)
    assert len(m) == 10 and bool(m)
    assert m.get(b"id-4") == b"h-4" and m.get(b"nope") is None and m.get(b"nope", b"d") == b"d"
    assert b"id-9" in m and b"id-10" not in m and "id-1" not in m
    m[b"id-4"] = b"new"
    assert m.get(b"id-4") == b"new" and len(m) == 10  # replaced, not added
    assert m.pop(b"id-4") == b"new" and m.pop(b"id-4") is None and len(m) == 9
    m.clear()
    assert len(m) == 0 and not m and not m.spilled
    assert list(tmp_path.iterdir()) == []  # the file went with the data


def test_the_file_is_private_holds_no_id_and_is_removed(tmp_path: Path) -> None:
    m = SpillMap(limit=2, directory=tmp_path)
    for i in range(50):
        m[b"sess-secret-%04d" % i] = b"hash-%04d" % i
    assert m.spilled and len(m) == 50
    (f,) = tmp_path.iterdir()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert b"sess-secret" not in f.read_bytes()  # keys are keyed digests, not ids
    m.close()
    assert list(tmp_path.iterdir()) == []


def test_a_map_dropped_without_close_removes_its_file(tmp_path: Path) -> None:
    m = SpillMap(((b"%d" % i, b"x") for i in range(10)), limit=2, directory=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    del m
    assert list(tmp_path.iterdir()) == []


def test_a_restore_whose_maps_spill_verifies_and_rolls_back(
    mock_settings: Any,
    mock_db: Any,
    full_backup: Any,
    keyring: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every map of a restore (the target's, the point's index, the read-back) on disk."""
    from bmc_pipeline.engine.restore import RestoreEngine
    from bmc_pipeline.engine.store import BackupStore

    spilled: list[int] = []
    real = SpillMap._spill

    def counted(self: SpillMap) -> None:
        spilled.append(1)
        real(self)

    monkeypatch.setattr(spillmap, "DEFAULT_LIMIT", 3)
    monkeypatch.setattr(SpillMap, "_spill", counted)
    convs = mock_db["conversations"]
    ids = sorted(d["_id"] for d in convs.find({}, {"_id": 1}))
    convs.delete_many({"_id": {"$in": ids[:7]}})
    convs.update_many({"_id": {"$in": ids[7:10]}}, {"$set": {"status": "edited"}})
    before = sorted(convs.find({}), key=lambda d: str(d["_id"]))
    engine = RestoreEngine(mock_settings, mock_db, BackupStore(mock_settings.backup_dir), keyring)
    report = engine.restore(full_backup.backup_id, "conversations", strategy="overwrite")
    assert report.verified, report.verification
    assert (report.inserted, report.overwritten) == (7, 3)
    assert len(spilled) >= 2  # the target and the read-back (a full alone needs no id map)
    result = engine.rollback(report.rollback_id or "")
    assert result["verified"], result
    assert sorted(convs.find({}), key=lambda d: str(d["_id"])) == before
    leftovers = [p for p in mock_settings.backup_dir.rglob("*.sqlite")]
    assert leftovers == []
