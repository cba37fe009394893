"""The ``backups/health`` asset: the dashboard, refreshed hourly, as Markdown and numbers."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.health import health_markdown, health_report
from bmc_pipeline.jobs.history import backup_run_history
from bmc_pipeline.resources import EncryptionResource, StorageResource

HEALTH_KEY = dg.AssetKey(["backups", "health"])


def build_health_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=HEALTH_KEY,
        group_name="maintenance",
        description="backup success rates, storage and its trend, restores, open alerts",
    )
    def backup_health(
        context: dg.AssetExecutionContext, encryption: EncryptionResource, storage: StorageResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        now = datetime.now(timezone.utc)
        runs = backup_run_history(context.instance, now - timedelta(days=30))
        h = health_report(settings, storage.store(), encryption.keyring(), runs, now)
        numbers = {
            k: dg.MetadataValue.float(float(v))
            for k, v in h.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        return dg.MaterializeResult(
            metadata={
                **numbers,
                "open_alerts": dg.MetadataValue.int(len(h["open_alerts"])),
                "report": dg.MetadataValue.md(health_markdown(h)),
            }
        )

    return backup_health
