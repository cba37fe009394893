"""The ``backups/health`` asset: the dashboard, refreshed hourly, as Markdown and numbers."""

from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from bmc_pipeline.assets.backups import OWNERS, backup_set_key
from bmc_pipeline.assets.drill import DRILL_KEY
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.drill import drill_history
from bmc_pipeline.engine.health import health_markdown, health_report
from bmc_pipeline.engine.watchdog import collection_table
from bmc_pipeline.jobs.history import backup_run_history
from bmc_pipeline.resources import EncryptionResource, StorageResource

HEALTH_KEY = dg.AssetKey(["backups", "health"])


def build_health_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=HEALTH_KEY,
        group_name="maintenance",
        description="backup success rates (every backup run, however launched), storage and its "
        "trend, restores, open alerts, and a row per collection: last full, last incremental, "
        "age, documents, recoverable until, last drill",
        # downstream of what it reports on, so the graph reads as the dashboard's sources
        deps=[backup_set_key("full"), backup_set_key("incremental"), DRILL_KEY],
        owners=OWNERS,
        kinds={"dagster"},
    )
    def backup_health(
        context: dg.AssetExecutionContext, encryption: EncryptionResource, storage: StorageResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        now = datetime.now(timezone.utc)
        runs = backup_run_history(context.instance, now - timedelta(days=30))
        store, keyring = storage.store(), encryption.keyring()
        h = health_report(settings, store, keyring, runs, now)
        rows = collection_table(settings, store, keyring, now, drill_history(settings))
        numbers = {
            k: dg.MetadataValue.float(float(v))
            for k, v in h.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        return dg.MaterializeResult(
            metadata={
                **numbers,
                "open_alerts": dg.MetadataValue.int(len(h["open_alerts"])),
                "backup_runs_counted": dg.MetadataValue.int(len(runs)),
                "collections": collections_table(rows),
                "report": dg.MetadataValue.md(health_markdown(h)),
            }
        )

    return backup_health


_COLUMNS = (
    "collection",
    "last_full",
    "last_incremental",
    "age_h",
    "documents",
    "recoverable_until",
    "last_drill_ok",
)


def collections_table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """The per-collection rows as a table the UI renders (ages in hours, easier to read).

    Every cell is text: a table's records must all have the same fields, and a collection with
    no backup yet has no age or count ("" says so).
    """
    records = []
    for r in rows:
        age = r["age_s"]
        values = {**r, "age_h": round(age / 3600, 1) if age is not None else None}
        records.append(
            dg.TableRecord({n: "" if values.get(n) is None else str(values[n]) for n in _COLUMNS})
        )
    return dg.MetadataValue.table(
        records, schema=dg.TableSchema(columns=[dg.TableColumn(n, "string") for n in _COLUMNS])
    )
