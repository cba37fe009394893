"""The one place that assembles ``dagster.Definitions`` (``workspace.yaml`` points here).

Importing this module builds nothing and reads no configuration: Dagster calls :func:`defs` when
it loads the code location, and the command line and the API call :func:`build_definitions` with
the settings they were given (``--config``), never the ambient ones.
"""

from __future__ import annotations

import os

import dagster as dg

from bmc_pipeline.assets import (
    build_all_backup_assets,
    build_drill_asset,
    build_health_asset,
    build_retention_asset,
)
from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.jobs import BACKUP_JOB_NAMES, build_jobs
from bmc_pipeline.resources import resources_from_settings
from bmc_pipeline.schedules import build_schedules
from bmc_pipeline.sensors import build_sensors
from bmc_pipeline.sensors.capture import build_capture_sensor, capture_asset_specs


def build_definitions(settings: Settings) -> dg.Definitions:
    jobs = build_jobs(settings)
    return dg.Definitions(
        assets=[
            *build_all_backup_assets(settings),
            build_retention_asset(settings),
            build_health_asset(settings),
            build_drill_asset(settings),
            *capture_asset_specs(settings),
        ],
        jobs=jobs,
        schedules=build_schedules(settings, {j.name: j for j in jobs}),
        sensors=[
            *build_sensors(settings),
            build_capture_sensor(settings, BACKUP_JOB_NAMES["full"]),
        ],
        resources=resources_from_settings(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, as configured by ``backup_config.json`` and the environment.

    The process that loads it (code server, run worker) creates files only its owner can read:
    run logs and step outputs hold restore reports.
    """
    os.umask(0o077)
    return build_definitions(load_settings())
