"""Retention: restic 'forget' rules and the guards that keep every kept backup restorable.

The expected sets below were worked out by hand from the calendar (ISO weeks: 2026-11-23 and
2026-11-24 are in W48, 2026-11-20 in W47), not computed by the code under test.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.retention import Point, RetentionPolicy, plan_retention, rotate
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore
from tests.support import write_config

POLICY = RetentionPolicy(daily=3, weekly=2, monthly=2)


def at(day: str, hour: int = 2) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


def full(bid: str, day: str, hour: int = 2, colls: tuple[str, ...] = ("conversations",)) -> Point:
    return Point(bid, "full", at(day, hour), frozenset(), frozenset(colls))


def inc(bid: str, day: str, parent: str) -> Point:
    return Point(bid, "incremental", at(day, 8), frozenset({parent}), frozenset({"conversations"}))


FULLS = [
    full("F1", "2026-09-10"), full("F2", "2026-10-05"), full("F3", "2026-10-20"),
    full("F4", "2026-11-02"), full("F5", "2026-11-10"), full("F6", "2026-11-20"),
    full("F7", "2026-11-20", hour=14), full("F8", "2026-11-23"), full("F9", "2026-11-24"),
]  # fmt: skip


def kept(decisions: list[Any]) -> set[str]:
    return {d.backup_id for d in decisions if d.keep}


def test_rules_keep_the_newest_per_day_week_and_month() -> None:
    decisions = plan_retention(FULLS, POLICY)
    assert kept(decisions) == {"F9", "F8", "F7", "F3"}
    reasons = {d.backup_id: d.reasons for d in decisions}
    assert reasons["F7"] == ["daily 2026-11-20", "weekly 2026-W47"]
    assert reasons["F3"] == ["monthly 2026-10"]
    assert reasons["F6"] == []  # same day as F7, older


def test_guards_keep_chains_fulls_of_every_collection_and_rollback_points() -> None:
    points = [
        *FULLS,
        inc("I1", "2026-11-24", "F9"),
        inc("I2", "2026-10-21", "F3"),
        inc("I3", "2026-10-22", "I2"),
        full("Q1", "2026-09-15", colls=("quotes",)),
        Point("R1", "rollback", at("2026-09-01"), frozenset(), frozenset({"conversations"})),
    ]
    decisions = plan_retention(points, POLICY)
    assert kept(decisions) == {"I1", "F9", "F8", "F7", "I3", "I2", "F3", "Q1", "R1"}
    reasons = {d.backup_id: d.reasons for d in decisions}
    assert "needed by I3" in reasons["I2"] and "needed by I2" in reasons["F3"]
    assert reasons["F9"] == ["newest full backup of conversations", "needed by I1"]
    assert reasons["Q1"] == ["newest full backup of quotes"]


def _expected_days(days: list[Any], policy: RetentionPolicy) -> set[Any]:
    """An independent oracle: the days each rule selects, by grouping the days with backups."""
    newest_first = sorted(days, reverse=True)
    chosen: set[Any] = set()
    for n, bucket in (
        (policy.daily, lambda d: d),
        (policy.weekly, lambda d: d.isocalendar()[:2]),
        (policy.monthly, lambda d: (d.year, d.month)),
    ):
        buckets: dict[Any, Any] = {}
        for d in newest_first:
            buckets.setdefault(bucket(d), d)  # the newest day of each bucket
        chosen |= set(list(buckets.values())[:n])  # insertion order is newest first
    return chosen


def test_two_years_with_gaps_keep_exactly_the_selected_days_whole() -> None:
    points: list[Point] = []
    first = datetime(2024, 11, 1, 2, tzinfo=timezone.utc)
    one_day = at("2026-01-02") - at("2026-01-01")
    last = None
    for n in range(730):
        if n % 17 in (3, 4):  # gaps: days with no backup at all
            continue
        d = first + n * one_day
        fid = f"full-{n}"
        points.append(Point(fid, "full", d, frozenset(), frozenset({"c"})))
        last = fid
        for h in (6, 12, 18):
            iid = f"inc-{n}-{h}"
            points.append(
                Point(iid, "incremental", d.replace(hour=h), frozenset({last}), frozenset({"c"}))
            )
            last = iid
    policy = RetentionPolicy()
    decisions = plan_retention(points, policy)
    days = _expected_days(sorted({p.taken.date() for p in points}), policy)
    # each kept day's newest backup is its 18:00 incremental, whose chain is the whole day
    expected = {p.backup_id for p in points if p.taken.date() in days}
    assert kept(decisions) == expected
    assert len(days) < 30 + 12 + 12 and len(expected) == 4 * len(days)
    by_id = {p.backup_id: p for p in points}
    assert all(by_id[b].parents <= expected for b in expected)  # no kept backup lost its parent


def test_rotate_on_a_real_store_dry_run_deletes_nothing_then_deletes_and_frees_blobs(
    mock_settings: Settings,
    mock_db: Any,
    tmp_path: Path,
    key: Key,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s, db = mock_settings, mock_db
    seed_database(db, 5, seed=1)
    files = write_files(s.files_root)
    ring = KeyRing([key])
    store = BackupStore(s.backup_dir)
    engine = BackupEngine(s, db, store, ring)
    ids = []
    for day in ("2026-09-10", "2026-10-20", "2026-11-23", "2026-11-24"):
        files[0].write_text(f"version {day}", encoding="utf-8")  # a new blob each time
        ids.append(engine.run("full", ["quotes"], now=at(day)).backup_id)
    blobs_before = len(list((store.root / "blobs").glob("*/*")))

    cfg = write_config(s, tmp_path / "cfg.json")
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    import json

    assert main(["--config", str(cfg), "rotate", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["deleted"] == []  # 30/12/12 keeps all four: each is the newest of its day
    assert len(store.refs()) == 4  # a dry run deletes nothing

    result = rotate(
        store, ring, RetentionPolicy(daily=2, weekly=0, monthly=0), dry_run=False, grace_s=0
    )
    assert sorted(result.deleted) == sorted(ids[:2])
    assert [r.backup_id for r in store.refs()] == ids[2:]
    assert result.blobs_deleted == 2  # the two versions of the file only the deleted backups held
    assert len(list((store.root / "blobs").glob("*/*"))) == blobs_before - 2
    os.environ.pop("BMC_BACKUP_KEY", None)


def test_delete_command_needs_the_id_twice_and_respects_the_guards(
    mock_settings: Settings,
    mock_db: Any,
    tmp_path: Path,
    key: Key,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s, db = mock_settings, mock_db
    seed_database(db, 5, seed=2)
    engine = BackupEngine(s, db, BackupStore(s.backup_dir), KeyRing([key]))
    old = engine.run("full", ["quotes"], now=at("2026-11-20"), include_files=False).backup_id
    new = engine.run("full", ["quotes"], now=at("2026-11-24"), include_files=False).backup_id
    cfg = str(write_config(s, tmp_path / "cfg.json"))
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")

    assert main(["--config", cfg, "delete", old, "--confirm", new]) == 1
    assert "repeat the backup id" in capsys.readouterr().err
    assert main(["--config", cfg, "delete", "latest", "--confirm", "latest"]) == 4
    assert main(["--config", cfg, "delete", new, "--confirm", new]) == 9  # the newest full
    assert "newest full backup of quotes" in capsys.readouterr().err
    assert main(["--config", cfg, "delete", old, "--confirm", old]) == 0
    assert [r.backup_id for r in BackupStore(s.backup_dir).refs()] == [new]


def test_rotate_leaves_stray_entries_in_the_blob_store_and_says_so(
    mock_settings: Settings, full_backup: Any, keyring: KeyRing
) -> None:
    """A dangling link, a directory and a foreign file among the blobs do not stop retention."""
    store = BackupStore(mock_settings.backup_dir)
    shelf = store.root / "blobs" / "ab"
    shelf.mkdir(parents=True, exist_ok=True)
    (shelf / ("ab" + "0" * 62)).symlink_to(store.root / "gone")
    (shelf / "a-directory").mkdir()
    (shelf / "notes.txt").write_text("someone's notes")
    policy = RetentionPolicy(daily=1, weekly=0, monthly=0)
    result = rotate(store, keyring, policy, dry_run=False, grace_s=0)
    assert sorted(result.stray) == sorted(
        f"blobs/ab/{n}" for n in ("ab" + "0" * 62, "a-directory", "notes.txt")
    )
    assert (shelf / "notes.txt").exists() and (shelf / "a-directory").is_dir()
    assert [r.backup_id for r in store.refs()] == [full_backup.backup_id]


def test_rotate_prunes_capture_segments_no_kept_backup_can_replay(
    mock_settings: Settings, mock_db: Any, key: Key
) -> None:
    from datetime import timedelta

    from bmc_pipeline.engine.capture.changes import CapturedChange
    from bmc_pipeline.engine.capture.segments import CaptureStore

    seed_database(mock_db, 3, seed=1)
    ring = KeyRing([key])
    store = BackupStore(mock_settings.backup_dir)
    engine = BackupEngine(mock_settings, mock_db, store, ring)
    for day in ("2026-10-20", "2026-11-23", "2026-11-24"):
        engine.run("full", ["quotes"], include_files=False, now=at(day))
    capture = CaptureStore(store, ring)
    one = b"\x0e\x00\x00\x00\x10_id\x00\x01\x00\x00\x00\x00"
    for day in ("2026-10-20", "2026-11-22", "2026-11-23"):
        t = at(day) + timedelta(hours=1)
        capture.publish([CapturedChange.put("quotes", t, one)], sealed=t)
    assert len(capture.segments()) == 3
    dry = rotate(store, ring, RetentionPolicy(daily=2, weekly=0, monthly=0), dry_run=True)
    assert dry.segments_deleted == 2 and len(capture.segments()) == 3
    result = rotate(store, ring, RetentionPolicy(daily=2, weekly=0, monthly=0), dry_run=False)
    # the oldest kept backup is 2026-11-23: segments that ended before it (less a margin) go
    assert result.segments_deleted == 2
    assert [s.first.date().isoformat() for s in capture.segments()] == ["2026-11-23"]
