"""Alerts reach real receivers, and the sensors alert once per incident and say when it is over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.devdb import free_port
from bmc_pipeline.engine.alerts import (
    Alert,
    DiscordChannel,
    LogFileChannel,
    Notifier,
    SlackChannel,
    SmtpChannel,
)
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.launch import current_partition
from bmc_pipeline.sensors import build_sensors
from tests.support import make_settings, unreachable
from tests.support.receivers import webhook_server

ALERT = Alert(
    key="stale:conversations", severity="critical",
    title="no successful full backup of conversations for 30 h", text="Check the runs.",
    collection="conversations", backup_id="20261124T020000Z-full-abc123",
    run_url="http://127.0.0.1:3000/runs/r1",
)  # fmt: skip


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


@pytest.fixture
def webhooks() -> Iterator[tuple[str, list[dict[str, Any]], str, list[dict[str, Any]]]]:
    slack, slack_in = webhook_server()
    discord, discord_in = webhook_server()
    try:
        yield (
            f"http://127.0.0.1:{slack.server_port}/hook", slack_in,
            f"http://127.0.0.1:{discord.server_port}/hook", discord_in,
        )  # fmt: skip
    finally:
        slack.shutdown()
        discord.shutdown()


def test_every_channel_delivers_in_its_own_format(smtp: Any, webhooks: Any, tmp_path: Path) -> None:
    port, inbox = smtp
    slack_url, slack_in, discord_url, discord_in = webhooks
    log = tmp_path / "alerts.jsonl"
    notifier = Notifier(
        [
            SmtpChannel(
                "127.0.0.1", port, "backups@bmc.com.uy", ["ops@bmc.com.uy"], security="none"
            ),
            SlackChannel(slack_url),
            DiscordChannel(discord_url),
            LogFileChannel(log),
        ],
        sleep=lambda _: None,
    )
    results = notifier.send(ALERT)
    assert [r.ok for r in results] == [True, True, True, True]
    mail = message_from_bytes(inbox.messages[0], policy=policy.default)
    assert "[CRITICAL] no successful full backup of conversations" in mail["Subject"]
    body = mail.get_content()
    assert "Collection: conversations" in body and "Backup: 20261124T020000Z-full-abc123" in body
    assert "Run: http://127.0.0.1:3000/runs/r1" in body
    assert slack_in[0]["text"].startswith("*🔴 [CRITICAL] no successful full backup")
    assert discord_in[0]["content"].startswith("**🔴 [CRITICAL] no successful full backup")
    line = json.loads(log.read_text().splitlines()[0])
    assert line["type"] == "alert" and line["key"] == "stale:conversations"


def test_a_receiver_that_is_down_does_not_stop_the_others(
    smtp: Any, webhooks: Any, tmp_path: Path
) -> None:
    port, inbox = smtp
    _, _, discord_url, discord_in = webhooks
    log = tmp_path / "alerts.jsonl"
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    notifier = Notifier(
        [SlackChannel(dead), SmtpChannel("127.0.0.1", port, "a@b.uy", ["c@d.uy"], security="none"),
         DiscordChannel(discord_url), LogFileChannel(log)],
        sleep=lambda _: None, failure_log=log,
    )  # fmt: skip
    results = {r.channel: r for r in notifier.send(ALERT)}
    assert not results["slack"].ok and results["slack"].attempts == 3
    assert results["email"].ok and results["discord"].ok and results["log"].ok
    assert len(inbox.messages) == 1 and len(discord_in) == 1
    kinds = [json.loads(x)["type"] for x in log.read_text().splitlines()]
    assert kinds.count("alert") == 1 and kinds.count("delivery_failed") == 1


T = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def watched(mock_settings: Settings, tmp_path: Path, key: Key) -> tuple[Settings, BackupEngine]:
    s = mock_settings
    s = s.model_copy(update={"alerts": s.alerts.model_copy(update={"min_free_percent": 0.0})})
    db = connect(s.mongodb.uri)[s.mongodb.database]
    seed_database(db, 5, seed=3)
    engine = BackupEngine(s, db, BackupStore(s.backup_dir), KeyRing([key]))
    engine.run("full", include_files=False, now=T)
    return s, engine


def _tick(
    settings: Settings, at: datetime, cursor: str | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Evaluate the risk sensor at ``at``; returns the new cursor and the alerts it logged."""
    log = settings.path(settings.alerts.log_file)
    before = len(log.read_text().splitlines()) if log.exists() else 0
    (sensor, _) = build_sensors(settings, clock=lambda: at)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
        sensor(ctx)
    lines = log.read_text().splitlines()[before:] if log.exists() else []
    return ctx.cursor, [json.loads(x) for x in lines]


def test_risk_sensor_alerts_once_stays_quiet_and_resolves(
    watched: tuple[Settings, BackupEngine],
) -> None:
    settings, engine = watched
    cursor, sent = _tick(settings, T + timedelta(hours=1), None)
    assert sent == []  # fresh backups, nothing late
    cursor, sent = _tick(settings, T + timedelta(hours=25), cursor)
    keys = sorted(a["key"] for a in sent)
    assert keys == sorted([f"stale:{c}" for c in settings.collections] + ["late:incremental"])
    assert {a["severity"] for a in sent if a["key"].startswith("stale")} == {"critical"}
    assert next(a for a in sent if a["key"] == "late:incremental")["severity"] == "warning"
    cursor, sent = _tick(settings, T + timedelta(hours=25, minutes=5), cursor)
    assert sent == []  # still open: no second alert
    engine.run("full", include_files=False, now=T + timedelta(hours=25, minutes=10))
    cursor, sent = _tick(settings, T + timedelta(hours=25, minutes=15), cursor)
    assert sorted(a["key"] for a in sent) == keys
    assert {a["severity"] for a in sent} == {"resolved"}
    assert json.loads(cursor or "{}") == {}


def test_low_disk_space_is_critical(watched: tuple[Settings, BackupEngine]) -> None:
    settings, _ = watched
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"min_free_percent": 100.0})}
    )
    _, sent = _tick(settings, T + timedelta(hours=1), None)
    assert [a["key"] for a in sent] == ["space"] and sent[0]["severity"] == "critical"


def test_a_failed_backup_run_produces_the_critical_alert(
    tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bmc_pipeline.definitions import build_definitions

    s = unreachable(make_settings(tmp_path, "mongomock://unused", "x", key))
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    job = build_definitions(s).resolve_job_def("full_backup_job")
    with dg.instance_for_test() as instance:
        (alert,) = _failure_alerts(
            s, job, instance, partition_key=current_partition(s, "full"),
            asset_selection=[dg.AssetKey(["backups", "full", "quotes"]), dg.AssetKey(["backups", "full", "backup_set"])],
        )  # fmt: skip
        (run,) = instance.get_runs()
    assert (
        alert["severity"] == "critical" and alert["title"] == "backup run failed: full_backup_job"
    )
    assert alert["run_url"].endswith(run.run_id)


def _failure_alerts(
    settings: Settings, job: Any, instance: Any, **run: Any
) -> list[dict[str, Any]]:
    """Run ``job`` (it must fail), feed its failure to run_failure_alerts, return the alert log."""
    result = job.execute_in_process(instance=instance, raise_on_error=False, **run)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    dagster_run = instance.get_run_by_id(result.run_id)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=failure, dagster_instance=instance,
        dagster_run=dagster_run,
    ).for_run_failure()  # fmt: skip
    (_, on_failure) = build_sensors(settings)
    on_failure(ctx)
    log = settings.path(settings.alerts.log_file)
    return [json.loads(x) for x in log.read_text().splitlines()]


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_backup_that_does_not_read_back_sends_the_integrity_check_failure(
    mock_settings: Settings, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive is damaged between writing and the blocking check, as a bad disk would."""
    import bmc_pipeline.assets.backups as assets

    real = assets.validate_backup

    def after_a_bad_disk(store: Any, ref: Any, keyring: Any, **kw: Any) -> Any:
        _flip_a_bit(next(ref.payload_dir.glob("quotes.*")))
        return real(store, ref, keyring, **kw)

    monkeypatch.setattr(assets, "validate_backup", after_a_bad_disk)
    job = build_definitions(mock_settings).resolve_job_def("full_backup_job")
    with dg.instance_for_test() as instance:
        today = current_partition(mock_settings, "full")
        alerts = _failure_alerts(mock_settings, job, instance, partition_key=today)
    (alert,) = alerts
    assert alert["severity"] == "critical"
    assert alert["title"] == "integrity check failure: full_backup_job"
    assert "archive_integrity" in alert["text"] and "quotes" in alert["text"]


def test_a_restore_that_fails_sends_the_recovery_operation_failure(
    mock_settings: Settings, mock_db: Any, full_backup: Any
) -> None:
    _flip_a_bit(full_backup.ref.payload_dir / f"conversations{ARCHIVE_SUFFIX}")
    mock_db.drop_collection("conversations")
    job = build_definitions(mock_settings).resolve_job_def("restore_job")
    config = {"backup_id": full_backup.backup_id, "collection": "conversations", "dry_run": False}
    with dg.instance_for_test() as instance:
        alerts = _failure_alerts(
            mock_settings, job, instance, run_config={"ops": {"restore_op": {"config": config}}}
        )
    (alert,) = alerts
    assert alert["title"] == "recovery operation failure: restore_job"
    assert "does not authenticate" in alert["text"] or "checksum" in alert["text"]
    assert mock_db["conversations"].count_documents({}) == 0  # nothing written
