"""The audit log rotates by size or age without breaking its chain; a missing part is found."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.engine.audit import AuditLog
from bmc_pipeline.engine.audit_chain import rotated_parts
from bmc_pipeline.engine.crypto import Key, KeyRing
from tests.support import make_settings, write_config


def _rotating(tmp_path: Path, keyring: KeyRing, n: int, **kw: float) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log", keyring, **kw)  # type: ignore[arg-type]
    for i in range(n):
        log.append(actor="alice", via="cli", action=f"backup {i}", params={"i": i})
    return log


def test_a_rotated_log_is_one_chain_across_its_parts(tmp_path: Path, keyring: KeyRing) -> None:
    log = _rotating(tmp_path, keyring, 40, rotate_bytes=4096)
    parts = rotated_parts(log.path)
    assert len(parts) >= 3 and [n for n, _ in parts] == list(range(1, len(parts) + 1))
    result = log.verify()
    assert result.ok and result.lines == 40 and result.macs_verified == 40, result.message
    assert result.files == len(parts) + (1 if log.path.exists() else 0)
    # each part's first line follows the last line of the part before
    first = json.loads(parts[1][1].read_text().splitlines()[0])
    last = json.loads(parts[0][1].read_text().splitlines()[-1])
    assert first["seq"] == last["seq"] + 1 and first["prev"] == last["hash"]


def test_a_missing_middle_part_is_found_and_named(tmp_path: Path, keyring: KeyRing) -> None:
    log = _rotating(tmp_path, keyring, 40, rotate_bytes=4096)
    parts = rotated_parts(log.path)
    parts[1][1].unlink()
    result = log.verify()
    assert not result.ok and result.kind == "removed"
    assert f"{parts[1][1].name} is missing" in str(result.message)


def test_old_parts_removed_on_purpose_are_a_warning(tmp_path: Path, keyring: KeyRing) -> None:
    log = _rotating(tmp_path, keyring, 40, rotate_bytes=4096)
    parts = rotated_parts(log.path)
    parts[0][1].unlink()
    result = log.verify()
    assert result.ok, result.message
    assert any("were removed" in w and "not checked" in w for w in result.warnings)
    # an edit in what remains is still found, naming the part and its line
    lines = parts[2][1].read_text().splitlines()
    lines[1] = lines[1].replace('"backup', '"restore')
    parts[2][1].write_text("\n".join(lines) + "\n")
    result = log.verify()
    assert not result.ok and f"line 2 of {parts[2][1].name} was edited" in str(result.message)


def test_the_log_rotates_by_age(tmp_path: Path, keyring: KeyRing) -> None:
    log = _rotating(tmp_path, keyring, 2, rotate_days=0.2 / 86400)  # a fifth of a second
    assert rotated_parts(log.path) == []
    time.sleep(0.3)
    log.append(actor="alice", via="cli", action="later")
    assert len(rotated_parts(log.path)) == 1 and not log.path.exists()
    log.append(actor="alice", via="cli", action="in the new part")
    result = log.verify()
    assert result.ok and result.lines == 4 and result.files == 2


def test_audit_verify_walks_the_parts_and_names_a_missing_one(
    tmp_path: Path, key: Key, capsys: pytest.CaptureFixture[str]
) -> None:
    from bmc_pipeline.engine.audit import audit_log_for

    settings = make_settings(tmp_path, "mongomock://audit-rotation", "bmc", key)
    audit = settings.audit.model_copy(update={"rotate_bytes": 4096})
    settings = settings.model_copy(update={"audit": audit})
    cfg = str(write_config(settings, tmp_path / "config.json"))
    log = audit_log_for(settings)
    for i in range(40):  # what commands write, as they write it
        log.append(actor="ops", via="cli", action="list", params={"i": i})
    assert main(["--config", cfg, "list"]) == 0
    parts = rotated_parts(log.path)
    assert len(parts) >= 3
    capsys.readouterr()
    assert main(["--config", cfg, "audit", "verify"]) == 0
    assert "chain intact" in capsys.readouterr().out
    parts[1][1].unlink()
    assert main(["--config", cfg, "audit", "verify"]) == 5
    out = capsys.readouterr().out
    assert f"TAMPERED: {parts[1][1].name} is missing" in out


def test_the_alert_log_rotates_and_an_alert_opened_before_is_still_open(tmp_path: Path) -> None:
    from bmc_pipeline.engine.alerts import Alert, LogFileChannel
    from bmc_pipeline.engine.records import read_records

    log = tmp_path / "logs" / "alerts.jsonl"
    channel = LogFileChannel(log, rotate_bytes=4096)

    def alert(i: int) -> Alert:
        return Alert(key=f"k{i}", severity="warning", title=f"alert {i}", text="x" * 200,
                     at=f"2026-12-01T00:00:{i % 60:02d}+00:00")  # fmt: skip

    for i in range(120):
        channel.send(alert(i))
    parts = sorted(p.name for p in log.parent.iterdir() if p.name.startswith("alerts.jsonl."))
    assert parts == [f"alerts.jsonl.{n}" for n in range(1, 6)]  # five kept, the oldest dropped
    keys = [r["key"] for r in read_records(log)]
    assert keys == sorted(keys, key=lambda k: int(k[1:]))  # oldest first, across the parts
    assert "k119" in keys and "k0" not in keys
    assert sum(p.stat().st_size for p in log.parent.iterdir()) < 7 * 4096
