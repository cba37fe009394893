"""The maintenance jobs: retention, the health dashboard and the restore drill (one asset each)."""

from __future__ import annotations

import dagster as dg

RETENTION_JOB = "retention_job"
HEALTH_JOB = "health_job"
DRILL_JOB = "drill_job"


def _asset_job(name: str, key: list[str], tags: dict[str, str]) -> dg.UnresolvedAssetJobDefinition:
    """A job that materializes one unpartitioned asset."""
    return dg.define_asset_job(
        name, selection=dg.AssetSelection.assets(dg.AssetKey(key)), tags=tags
    )


def build_maintenance_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        _asset_job(RETENTION_JOB, ["backups", "retention"], {"bmc/operation": "retention"}),
        _asset_job(HEALTH_JOB, ["backups", "health"], {}),
        _asset_job(DRILL_JOB, ["backups", "drill"], {"bmc/operation": "drill"}),
    ]
