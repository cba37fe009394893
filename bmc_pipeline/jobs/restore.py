"""``restore_job`` and ``rollback_job``: restores launched from the Dagster UI's Launchpad.

Both open with a default config (``dry_run`` on), so a person at 3 a.m. sees every option, changes
what they need and launches. Runs carry the tag ``bmc/operation=restore``; the instance can allow
one at a time with a tag concurrency limit (docs/RESTORE.md).
"""

from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.restore import (
    FilesRequest,
    PointRestoreReport,
    RestoreEngine,
    RestoreFilters,
    RestoreOptions,
    RestoreReport,
    resolve_source,
)
from bmc_pipeline.engine.scanner import recoverable_documents
from bmc_pipeline.engine.vocabulary import Strategy
from bmc_pipeline.progress import run_log
from bmc_pipeline.resources import EncryptionResource, MongoResource, StorageResource
from bmc_pipeline.run_audit import audited_run

RESTORE_TAGS = {"bmc/operation": "restore"}
# the config fields that are restore filters (RestoreFilters.from_dict parses them)
FILTER_FIELDS = ("date_from", "date_to", "session_ids", "point_in_time", "drop_deleted", "query")


class RestoreConfig(dg.Config):
    backup_id: str = Field(default="latest", description="a backup id, or 'latest'")
    collection: str = Field(default="conversations", description="the collection in the backup")
    target_collection: str | None = Field(default=None, description="default: the same name")
    strategy: Strategy = Field(
        default=Strategy.skip_duplicates,
        description="; ".join(f"{s.value}: {s.summary}" for s in Strategy),
    )
    dry_run: bool = Field(
        default=True, description="plan only: say what would happen, write nothing; false to write"
    )
    date_from: str | None = Field(
        default=None,
        description="only documents whose timestamp field is at or after this ISO date/time "
        "(e.g. 2026-11-25 or 2026-11-25T03:00:00Z)",
    )
    date_to: str | None = Field(
        default=None,
        description="only documents whose timestamp field is before this ISO date/time",
    )
    session_ids: list[str] = Field(
        default_factory=list, description="only these sessions (empty: every session)"
    )
    point_in_time: str | None = Field(
        default=None,
        description="restore the state at this ISO date/time (the newest backup point at or "
        "before it)",
    )
    drop_deleted: bool = Field(default=False, description="delete ids the backup chain deleted")
    query: str | None = Field(
        default=None,
        description='MongoDB query (JSON) over the backed-up documents, e.g. {"status": "open"}; '
        "comparison, set and logical operators only",
    )
    fail_fast: bool = Field(
        default=False,
        description="stop at the first invalid document (default: quarantine it and go on)",
    )
    collections: list[str] | None = Field(
        default=None,
        description="several collections at one point, under one rollback point: [] for every "
        "collection the backup holds; when set, 'collection' and 'target_collection' are ignored",
    )
    files: bool = Field(
        default=False,
        description="also restore the chatbot's files at the same point into files.root (alone, "
        "without 'collections': only the files)",
    )
    indexes: bool = Field(
        default=True, description="recreate and check the recorded collection options and indexes"
    )
    auto_rollback: bool = Field(
        default=True,
        description="if a write fails half-way, roll back at once (false: keep what was written)",
    )
    files_target: str | None = Field(
        default=None,
        description="with 'files': the directory to restore the files into (default: files.root)",
    )
    file_paths: list[str] = Field(
        default_factory=list,
        description="with 'files' alone: only files matching these globs (empty: every file)",
    )
    require_ids: bool = Field(
        default=False,
        description="when backup_id is a JSON file: refuse its documents without _id instead of "
        "giving them an id derived from their content",
    )
    from_scan: str | None = Field(
        default=None,
        description="recover: a recovery_report_*.json the scanner wrote; its missing "
        "conversations are written into target_collection (default conversations); backup_id, "
        "filters and 'collections' are not used",
    )

    @field_validator("date_from", "date_to", "point_in_time")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{v!r} is not an ISO date or date/time, like 2026-11-25 or 2026-11-25T03:00:00Z"
            ) from None
        return v

    @property
    def whole(self) -> bool:
        return self.collections is not None or self.files


class RollbackConfig(dg.Config):
    rollback_id: str = Field(
        default="",
        description="the rollback_id a restore reported (bmc-backup list --type rollback shows "
        "them, newest first)",
    )
    force: bool = Field(
        default=False,
        description="roll back even if documents the restore wrote were changed since "
        "(those changes are lost)",
    )


def _observe(report: dict[str, Any], collection: str) -> dg.AssetObservation:
    btype = "incremental" if "-incremental-" in report["backup_id"] else "full"
    return dg.AssetObservation(
        asset_key=dg.AssetKey(["backups", btype, collection]),
        metadata={
            "restored_into": dg.MetadataValue.text(report["target_collection"]),
            "backup_id": dg.MetadataValue.text(report["backup_id"]),
            "dry_run": dg.MetadataValue.bool(report["dry_run"]),
            **(
                {"would_restore": dg.MetadataValue.int(report["restored"])}
                if report["dry_run"]
                else {
                    "restored": dg.MetadataValue.int(report["restored"]),
                    "verified": dg.MetadataValue.bool(report["verified"]),
                    "rollback_id": dg.MetadataValue.text(report["rollback_id"] or ""),
                }
            ),
        },
    )


def _restore_point(
    config: RestoreConfig, engine: RestoreEngine, filters: RestoreFilters
) -> PointRestoreReport:
    """Several collections and/or the files at one point: one report, one rollback point."""
    backup_id, legacy = resolve_source(engine.store, config.backup_id, "conversations")
    if legacy is not None:
        raise BmcError(
            f"{config.backup_id} is a JSON file: name its collection "
            "(--collection on the command line, 'collection' in the Launchpad)"
        )
    files_to = Path(config.files_target) if config.files_target else engine.settings.files_root
    if config.collections is None:  # only the files
        request = FilesRequest(
            backup_id, files_to, config.file_paths, filters.point_in_time, config.dry_run
        )
        return engine.run_point([], request)
    return engine.restore_point(
        backup_id, config.collections, files_to=files_to if config.files else None,
        strategy=config.strategy, filters=filters, dry_run=config.dry_run,
        fail_fast=config.fail_fast, indexes=config.indexes, auto_rollback=config.auto_rollback,
    )  # fmt: skip


def _restore_one(
    config: RestoreConfig, engine: RestoreEngine, filters: RestoreFilters
) -> RestoreReport:
    """One collection, from a backup chain or a JSON file (``backup_id`` names either)."""
    backup_id, legacy = resolve_source(
        engine.store, config.backup_id, config.collection, require_ids=config.require_ids
    )
    return engine.run(
        RestoreOptions(
            backup_id=backup_id, collection=config.collection,
            target_collection=config.target_collection, strategy=config.strategy,
            filters=filters, dry_run=config.dry_run, fail_fast=config.fail_fast,
            legacy_documents=legacy, indexes=config.indexes, auto_rollback=config.auto_rollback,
        )
    )  # fmt: skip


def _recover(config: RestoreConfig, engine: RestoreEngine) -> dict[str, Any]:
    """The conversations a scan report found missing, written into the target collection."""
    report_path = Path(config.from_scan or "")
    missing: list[str] = []
    report = engine.restore(
        f"file:{report_path.name}",
        "conversations",
        target_collection=config.target_collection,
        strategy=config.strategy,
        dry_run=config.dry_run,
        legacy_documents=recoverable_documents(report_path, engine.keyring, missing),
    ).as_dict()
    report["not_found"] = missing  # filled as the documents were read
    return report


def _metadata(report: dict[str, Any], whole: bool) -> dict[str, Any]:
    if report["dry_run"]:  # first, and no "verified: false": nothing was written to verify
        common: dict[str, Any] = {
            "dry_run": dg.MetadataValue.text("dry run: nothing was written"),
            "would_restore": report["restored"],
            "report": dg.MetadataValue.json(report),
        }
    else:
        common = {
            "restored": report["restored"],
            "verified": report["verified"],
            "rollback_id": report["rollback_id"] or "",
            "report": dg.MetadataValue.json(report),
        }
    if whole:
        files = report["files"] or {}
        return {**common, "collections": len(report["collections"]),
                "files_restored": files.get("restored", 0)}  # fmt: skip
    return {**common, "inserted": report["inserted"], "skipped": report["skipped"],
            "invalid": report["invalid"], "docs_per_s": report["docs_per_s"]}  # fmt: skip


def build_restore_jobs(settings: Settings) -> list[dg.JobDefinition]:
    def engine_for(
        context: dg.OpExecutionContext,
        mongo: MongoResource,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> RestoreEngine:
        return RestoreEngine(
            settings,
            mongo.database_handle(),
            storage.store(),
            encryption.keyring(),
            log=run_log(context.log.info),
        )

    @dg.op(tags=RESTORE_TAGS)
    def restore_op(
        context: dg.OpExecutionContext,
        config: RestoreConfig,
        mongo: MongoResource,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> dg.Output[dict[str, Any]]:
        engine = engine_for(context, mongo, encryption, storage)
        if config.dry_run:
            context.log.info("dry run: the plan is reported, nothing will be written")
        filters = RestoreFilters.from_dict(
            config.model_dump(include=set(FILTER_FIELDS), exclude_none=True)
        )
        with audited_run(
            context, settings, engine.keyring, "restore", config.model_dump(mode="json")
        ) as info:
            if config.from_scan:
                report = _recover(config, engine)
            elif config.whole:
                report = _restore_point(config, engine, filters).as_dict()
            else:
                report = _restore_one(config, engine, filters).as_dict()
            info["extra"] = {
                "backup_id": report["backup_id"],
                "restored": report["restored"],
                "verified": report["verified"],
                "rollback_id": report["rollback_id"],
            }
            if not config.dry_run and not report["verified"]:
                info["outcome"] = "unverified"
        parts = report["collections"].values() if config.whole else [report]
        for one in parts:
            if not one["backup_id"].startswith("file:"):  # a JSON file is no backup asset
                context.log_event(_observe(one, one["collection"]))
        if not config.dry_run and not report["verified"]:
            said = [v for one in parts for v in one["verification"]]
            if config.whole and report["files"]:
                said += report["files"]["verification"]
            raise dg.Failure(
                description=f"restore not verified: {'; '.join(said)}",
                metadata={
                    "rollback_id": report["rollback_id"] or "",
                    "report": dg.MetadataValue.json(report),
                },
            )
        return dg.Output(report, metadata=_metadata(report, config.whole))

    @dg.op(tags=RESTORE_TAGS)
    def rollback_op(
        context: dg.OpExecutionContext,
        config: RollbackConfig,
        mongo: MongoResource,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> dg.Output[dict[str, Any]]:
        engine = engine_for(context, mongo, encryption, storage)
        if not config.rollback_id:
            newest = [r.backup_id for r in engine.store.refs(backup_type="rollback")][-3:]
            raise dg.Failure(
                description="rollback_id is empty: give the rollback_id the restore reported"
                + (f" (the newest: {', '.join(reversed(newest))})" if newest else "")
            )
        with audited_run(
            context, settings, engine.keyring, "rollback",
            {"rollback_id": config.rollback_id, "force": config.force},
        ) as info:  # fmt: skip
            result = engine.rollback(config.rollback_id, force=config.force)
            info["outcome"] = "ok" if result["verified"] else "unverified"
        if not result["verified"]:
            raise dg.Failure(
                description=f"rollback not verified: {result['verification']}",
                metadata={"report": dg.MetadataValue.json(result)},
            )
        return dg.Output(result, metadata={"report": dg.MetadataValue.json(result)})

    @dg.job(
        tags=RESTORE_TAGS,
        # the Launchpad opens with the deployment's own default strategy, as a dry run
        config=dg.RunConfig(
            ops={"restore_op": RestoreConfig(strategy=settings.restore.default_strategy)}
        ),
        description="restore a collection from a backup (dry run by default)",
    )
    def restore_job() -> None:
        restore_op()

    @dg.job(
        tags=RESTORE_TAGS,
        # the Launchpad opens with every field shown, not with a "missing config" error
        config=dg.RunConfig(ops={"rollback_op": RollbackConfig()}),
        description="undo a restore, from the rollback_id it reported",
    )
    def rollback_job() -> None:
        rollback_op()

    return [restore_job, rollback_job]
