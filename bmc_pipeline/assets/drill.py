"""The ``backups/drill`` asset: the daily restore drill, its RTO plotted by the Dagster UI."""

from typing import Any

import dagster as dg

from bmc_pipeline.assets.backups import OWNERS
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.drill import run_drill
from bmc_pipeline.progress import run_log
from bmc_pipeline.resources import EncryptionResource, MongoResource, StorageResource
from bmc_pipeline.run_audit import audited_run
from bmc_pipeline.run_kinds import OPERATION_TAG, tag_run

DRILL_KEY = dg.AssetKey(["backups", "drill"])


def build_drill_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=DRILL_KEY,
        group_name="maintenance",
        owners=OWNERS,
        kinds={"mongodb"},
        description=(
            "restores the newest point of every collection and the files into a scratch "
            "database and directory, verifies digests, counts and indexes, records the time it "
            "took, drops the copies; alerts when it fails"
        ),
        deps=[dg.AssetKey(["backups", "full", "backup_set"])],
        op_tags={"bmc/operation": "drill"},
    )
    def drill(
        context: dg.AssetExecutionContext,
        mongo: MongoResource,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        keyring = encryption.keyring()
        tag_run(context, {OPERATION_TAG: "drill"})  # also when the UI launched it
        with audited_run(context, settings, keyring, "drill", {}) as info:
            report = run_drill(
                settings, mongo.client(), storage.store(), keyring,
                notifier=Deployment(settings).notifier(), log=run_log(context.log.info),
            )  # fmt: skip
            info["extra"] = {"ok": report.ok, "rto_s": report.rto_s}
            if not report.ok:
                info["outcome"] = "failed"
        d = report.as_dict()
        metadata: dict[str, Any] = {
            "ok": dg.MetadataValue.bool(report.ok),
            "rto_s": dg.MetadataValue.float(report.rto_s),
            "documents": dg.MetadataValue.int(report.documents),
            "docs_per_s": dg.MetadataValue.float(d["docs_per_s"]),
            "files": dg.MetadataValue.int(report.files),
            "report": dg.MetadataValue.json(d),
        }
        for name, c in report.collections.items():
            metadata[f"{name}_s"] = dg.MetadataValue.float(c.seconds)
        if not report.ok:
            raise dg.Failure(
                description=f"restore drill failed: {report.error or 'not verified'}",
                metadata={"report": dg.MetadataValue.json(d)},
            )
        return dg.MaterializeResult(metadata=metadata)

    return drill
