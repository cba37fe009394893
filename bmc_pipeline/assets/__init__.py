"""Assets built from the engine; each submodule exports builders that take the Settings."""

from bmc_pipeline.assets.backups import build_all_backup_assets
from bmc_pipeline.assets.drill import build_drill_asset
from bmc_pipeline.assets.health import build_health_asset
from bmc_pipeline.assets.retention import build_retention_asset

__all__ = [
    "build_all_backup_assets",
    "build_drill_asset",
    "build_health_asset",
    "build_retention_asset",
]
