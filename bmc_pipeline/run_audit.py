"""Audit-log entries for Dagster runs: who launched the run, what it did, how it ended.

A run's actor comes from its tags: ``bmc/launched_by`` for runs started by the command line
(``cli:<user>``) or the API (``api:token:<name>``), the schedule or sensor that started it, and
otherwise the Dagster UI (whose users Dagster's open-source edition does not identify).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import audit_log_for
from bmc_pipeline.engine.crypto import KeyRing


def run_actor(tags: dict[str, str]) -> str:
    if "bmc/launched_by" in tags:
        return tags["bmc/launched_by"]
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    return "dagster-ui"


@contextmanager
def audited_run(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    settings: Settings,
    keyring: KeyRing | None,
    action: str,
    params: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """Record the ``with`` body as one operation of this run (see AuditLog.operation)."""
    log = audit_log_for(settings, keyring)
    with log.operation(
        actor=run_actor(dict(context.run.tags)),
        via="dagster",
        action=action,
        params={**params, "run_id": context.run.run_id, "job": context.run.job_name},
    ) as info:
        yield info
