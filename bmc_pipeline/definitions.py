"""The one place that builds ``dagster.Definitions`` (``workspace.yaml`` points here)."""

from __future__ import annotations

import dagster as dg

from bmc_pipeline.assets import (
    build_all_backup_assets,
    build_health_asset,
    build_retention_asset,
)
from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.jobs import backup_jobs
from bmc_pipeline.jobs.restore import build_restore_jobs
from bmc_pipeline.jobs.scan import build_scan_job
from bmc_pipeline.resources import resources_from_settings
from bmc_pipeline.schedules import schedules
from bmc_pipeline.sensors import build_sensors


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *build_all_backup_assets(settings),
            build_retention_asset(settings),
            build_health_asset(settings),
        ],
        jobs=[*backup_jobs, *build_restore_jobs(settings), build_scan_job(settings)],
        schedules=schedules,
        sensors=build_sensors(settings),
        resources=resources_from_settings(settings),
    )


defs = build_definitions(load_settings())
