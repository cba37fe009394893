"""Assets built from the engine; each submodule exports builders that take the Settings."""

from bmc_pipeline.assets.backups import build_all_backup_assets

__all__ = ["build_all_backup_assets"]
