"""The daily restore drill: a scheduled tick runs it and records its RTO; a corrupted archive makes
the next one fail and alert a real receiver."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pytest

from bmc_pipeline.assets.drill import DRILL_KEY
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.backup import BackupResult
from bmc_pipeline.engine.drill import drill_history, scratch_name
from bmc_pipeline.engine.errors import ConfigError
from tests.support.receivers import webhook_server


def test_a_scheduled_tick_runs_the_drill_and_a_corrupt_archive_fails_it_with_an_alert(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, seeded: dict[str, int]
) -> None:
    server, received = webhook_server()
    settings = mock_settings.model_copy(
        update={"slack_webhook_url": f"http://127.0.0.1:{server.server_port}/hook"}
    )
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("drill_daily")
    at = datetime(2026, 12, 1, 4, 0, tzinfo=timezone.utc)
    try:
        with dg.instance_for_test() as instance:
            ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
            (request,) = schedule.evaluate_tick(ctx).run_requests or []
            job = defs.resolve_job_def(request.job_name or "drill_job")
            result = job.execute_in_process(instance=instance, tags=request.tags)
            assert result.success
            event = instance.get_latest_materialization_event(DRILL_KEY)
            assert event is not None and event.asset_materialization is not None
            meta = event.asset_materialization.metadata
            assert meta["ok"].value is True and meta["rto_s"].value > 0
            assert meta["documents"].value == sum(seeded.values())
            assert mock_db.client[scratch_name(settings)].list_collection_names() == []  # dropped
            assert mock_db["quotes"].count_documents({}) == seeded["quotes"]  # live untouched

            archive = (
                full_backup.ref.payload_dir
                / full_backup.manifest.collections["quotes"].documents.file.split("/")[-1]
            )
            data = bytearray(archive.read_bytes())
            data[-40] ^= 0xFF  # one flipped bit in the last segment
            archive.write_bytes(bytes(data))
            failed = job.execute_in_process(instance=instance, raise_on_error=False)
            assert not failed.success
    finally:
        server.shutdown()
    last = drill_history(settings)[-1]
    assert last["ok"] is False and "quotes" in last["error"]
    (alert,) = [m for m in received if "drill" in json.dumps(m)]
    assert "restore drill failed" in alert["text"]


def test_the_drill_refuses_to_use_the_live_database(mock_settings: Settings) -> None:
    drill = mock_settings.drill.model_copy(update={"database": mock_settings.mongodb.database})
    with pytest.raises(ConfigError, match="live database"):
        scratch_name(mock_settings.model_copy(update={"drill": drill}))


def test_the_daily_report_reaches_a_real_receiver_and_says_what_is_at_risk(
    mock_settings: Settings, full_backup: BackupResult
) -> None:
    server, received = webhook_server()
    settings = mock_settings.model_copy(
        update={"slack_webhook_url": f"http://127.0.0.1:{server.server_port}/hook"}
    )
    try:
        # built and resolved inside the instance's context, where Dagster looks for its state
        # storage (outside it, a storage an earlier test's instance left may be found)
        with dg.instance_for_test() as instance:
            defs = build_definitions(settings)
            assert defs.resolve_schedule_def("daily_report").cron_schedule == "0 7 * * *"
            result = defs.resolve_job_def("daily_report_job").execute_in_process(instance=instance)
    finally:
        server.shutdown()
    assert result.success
    (message,) = received
    text = message["text"]
    assert text.startswith("*📋 [INFO] daily backup report:")
    assert "quotes: newest point" in text and "last full" in text
    assert "Risk: no restore drill has run yet" in text  # the drill never ran here
    off = settings.alerts.model_copy(update={"daily_report": None})
    quiet = build_definitions(settings.model_copy(update={"alerts": off}))
    assert "daily_report" not in {s.name for s in quiet.schedules or []}
