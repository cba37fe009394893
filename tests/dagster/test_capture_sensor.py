"""capture_sensor and `status`: segments become materializations of capture/<collection>, lag
alerts once and resolves, a gap asks for a full backup; `status --check` fails on lag."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.capture.changes import CapturedChange
from bmc_pipeline.engine.capture.segments import CaptureStore, CoveredRange, Gap, Position
from bmc_pipeline.engine.capture.status import capture_problems, capture_status
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.sensors.capture import build_capture_sensor

T = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)


def enabled(s: Settings) -> Settings:
    return s.model_copy(update={"capture": s.capture.model_copy(update={"enabled": True})})


@pytest.fixture
def captured(mock_settings: Settings, key: Key) -> tuple[Settings, CaptureStore]:
    s = enabled(mock_settings)
    capture = CaptureStore(Deployment(s).store(), KeyRing([key]))
    changes = [CapturedChange.put("conversations", T + timedelta(seconds=i), b"\x0e\x00\x00\x00\x10_id\x00" + i.to_bytes(4, "little") + b"\x00") for i in range(3)]  # fmt: skip
    capture.publish(changes, sealed=T + timedelta(seconds=4))
    capture.save_position(
        Position(source="oplog", database="db", ranges=[CoveredRange(start=T, until=T + timedelta(seconds=4))])
    )  # fmt: skip
    return s, capture


def tick(s: Settings, at: datetime, cursor: str | None) -> tuple[Any, list[dict[str, Any]]]:
    log = s.path(s.alerts.log_file)
    before = len(log.read_text().splitlines()) if log.exists() else 0
    sensor = build_capture_sensor(s, "full_backup_job", clock=lambda: at)
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    lines = log.read_text().splitlines()[before:] if log.exists() else []
    return result, [json.loads(x) for x in lines]


def test_segments_are_materializations_and_lag_alerts_once(
    captured: tuple[Settings, CaptureStore],
) -> None:
    s, _ = captured
    result, sent = tick(s, T + timedelta(seconds=10), None)
    (event,) = result.asset_events
    assert event.asset_key == dg.AssetKey(["capture", "conversations"])
    assert event.metadata["changes"].value == 3 and event.metadata["lag_s"].value == 2.0
    assert sent == [] and result.run_requests == []
    late = T + timedelta(seconds=4 + s.capture.max_lag_seconds + 1)
    result, sent = tick(s, late, result.cursor)
    assert result.asset_events == []  # the segment was shown already
    assert [(a["key"], a["severity"]) for a in sent] == [("capture-lag", "critical")]
    result, sent = tick(s, late + timedelta(seconds=30), result.cursor)
    assert sent == []  # still behind: no second alert
    assert capture_problems(capture_status(Deployment(s).store(), captured[1].keyring, late), s)


def test_a_gap_alerts_once_and_requests_a_full_backup(
    captured: tuple[Settings, CaptureStore],
) -> None:
    s, capture = captured
    pos = capture.position()
    assert pos is not None
    pos.gaps.append(
        Gap(after=T, before=T + timedelta(minutes=5), detected=T, reason="oplog trimmed")
    )
    capture.save_position(pos)
    result, sent = tick(s, T + timedelta(seconds=5), None)
    assert [a["key"] for a in sent] == ["capture-gap"]
    (run,) = result.run_requests
    assert run.job_name == "full_backup_job" and run.partition_key == "2026-12-01"
    result, sent = tick(s, T + timedelta(seconds=35), result.cursor)
    assert sent == []
    problems = capture_problems(capture_status(Deployment(s).store(), capture.keyring, T), s)
    assert any("lost history" in p for p in problems)


def test_status_names_capture_lag_as_a_problem(
    captured: tuple[Settings, CaptureStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bmc_pipeline.cli import main
    from tests.support import write_config

    s, _ = captured
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    config = write_config(s, tmp_path / "c.json")
    assert main(["--config", str(config), "status", "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    assert h["capture"]["recoverable_until"] == (T + timedelta(seconds=4)).isoformat()
    lag = [p for p in h["problems"] if p.startswith("continuous capture is")]
    assert lag and "capture.max_lag_seconds 120" in lag[0]
    assert main(["--config", str(config), "status", "--check"]) == 1
    assert "PROBLEM continuous capture is" in capsys.readouterr().out
