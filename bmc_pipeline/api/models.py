"""The API's request and response models (its OpenAPI document is generated from these)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from bmc_pipeline.config import COLLECTION_NAME_RE
from bmc_pipeline.engine import errors as E
from bmc_pipeline.engine.restore import check_query
from bmc_pipeline.engine.vocabulary import Strategy

BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-(full|incremental|rollback)-[0-9a-f]{6}$"
ROLLBACK_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-rollback-[0-9a-f]{6}$"
# what a restore may name as its source: a backup id, "latest", or a manifest's file name
BACKUP_REF_PATTERN = (
    r"^(latest|[0-9]{8}T[0-9]{6}Z-(full|incremental)-[0-9a-f]{6}"
    r"|backup_(full|incremental)_[0-9]{8}T[0-9]{6}Z_[0-9a-f]{6}\.json)$"
)
COLLECTION_PATTERN = COLLECTION_NAME_RE.pattern


# -- models ----------------------------------------------------------------------------------------
class Problem(BaseModel):
    """An RFC 9457 problem document: every error this API returns has this shape."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class DateRange(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None


class RestoreFiltersIn(BaseModel):
    """Which documents to restore. ``query`` is a MongoDB query with whitelisted operators."""

    model_config = ConfigDict(extra="forbid")
    date_range: DateRange | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None
    session_ids: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=10_000
    )
    query: dict[str, Any] | None = Field(
        default=None,
        description="MongoDB query over the backed-up documents; operators: $eq $ne $gt $gte "
        "$lt $lte $in $nin $and $or $nor $not $exists $type $size $all $elemMatch $regex; "
        "values may be Extended JSON such as {'$date': '2026-11-01T00:00:00Z'}",
    )
    point_in_time: datetime | None = None
    drop_deleted: StrictBool = False

    @field_validator("query")
    @classmethod
    def _whitelisted(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                check_query(v)
            except E.BmcError as exc:
                raise ValueError(str(exc)) from None
        return v

    def op_config(self) -> dict[str, Any]:
        """The filter fields of ``restore_job``'s config (``RestoreFilters.from_dict`` parses them)."""
        dr = self.date_range
        return {
            "date_from": _iso((dr.from_ if dr else None) or self.date_from),
            "date_to": _iso((dr.to if dr else None) or self.date_to),
            "session_ids": self.session_ids or [],
            "query": json.dumps(self.query) if self.query is not None else None,
            "point_in_time": _iso(self.point_in_time),
            "drop_deleted": self.drop_deleted,
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_file: str = Field(
        default="latest",
        pattern=BACKUP_REF_PATTERN,
        description="a backup id, 'latest', or a manifest file name (backup_full_<ts>_<id>.json)",
    )
    target_collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="restore one collection into this one; without it (and without "
        "collections), every collection of the backup point is restored",
    )
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="the collection in the backup; default: target_collection",
    )
    collections: list[Annotated[str, Field(pattern=COLLECTION_PATTERN)]] | None = Field(
        default=None,
        max_length=100,
        description="several collections at one point under one rollback point; [] for every "
        "collection the backup holds",
    )
    files: StrictBool = Field(
        default=False, description="also restore the chatbot's files at the same point"
    )
    indexes: StrictBool = Field(
        default=True, description="recreate and check the recorded collection options and indexes"
    )
    auto_rollback: StrictBool = Field(
        default=True,
        description="if a write fails half-way, roll back at once (false: keep what was written)",
    )
    strategy: Strategy | None = Field(default=None, description="default: restore.default_strategy")
    # strict: "false", 0 or "no" are refused rather than read as false (a real restore by accident)
    dry_run: StrictBool = Field(default=True, description="plan only; set false to write")
    filters: RestoreFiltersIn | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollback_id: str = Field(pattern=ROLLBACK_ID_PATTERN)
    force: StrictBool = Field(
        default=False,
        description="roll back even if documents the restore wrote were changed since "
        "(otherwise 409 naming them)",
    )


class BackupCreated(BaseModel):
    backup_id: str
    type: str
    timestamp: str
    path: str = Field(description="the manifest, relative to the backup directory")
    size_bytes: int
    collections: dict[str, dict[str, Any]]
    filesystem: dict[str, Any]
    run_id: str


class BackupRow(BaseModel):
    backup_id: str
    type: str
    timestamp: str
    path: str
    collections: dict[str, int] | None = None
    files: int | None = None
    size_bytes: int | None = None
    authenticated: bool | None = None
    error: str | None = None


class BackupList(BaseModel):
    backups: list[BackupRow]
    count: int
    total: int
    limit: int
    offset: int
    next_offset: int | None


class Deleted(BaseModel):
    backup_id: str
    deleted: bool


class FileCheckOut(BaseModel):
    file: str
    ok: bool
    documents: int | None = None
    error: str | None = None


class Validation(BaseModel):
    backup_id: str
    ok: bool
    manifest_ok: bool
    files: list[FileCheckOut]
    errors: list[str]


class RestoreResult(BaseModel):
    report: dict[str, Any]
    validation: dict[str, Any] = Field(
        description="the restore's own verification: verified, and what was compared"
    )
    run_id: str


class RollbackResult(BaseModel):
    result: dict[str, Any]
    run_id: str


class DrillResult(BaseModel):
    report: dict[str, Any] = Field(
        description="the drill's report: ok (the verdict), rto_s, per-collection checks, error"
    )
    run_id: str


class ScanResult(BaseModel):
    summary: dict[str, Any]
    report: dict[str, Any]
    report_files: list[str] = Field(description="file names in scanner.output_dir")


class RunAccepted(BaseModel):
    """A backup, restore, rollback or drill started with ``Prefer: respond-async``: where to
    follow it."""

    run_id: str
    status: str = Field(description="running")
    status_url: str = Field(description="GET it until status is succeeded or failed")


class RunStatus(BaseModel):
    run_id: str
    kind: str = Field(description="restore or rollback")
    status: str = Field(description="running, succeeded or failed")
    started: str
    finished: str | None = None
    elapsed_s: float = Field(description="seconds since it started (until it finished)")
    result: dict[str, Any] | None = Field(
        default=None, description="when succeeded: the body the synchronous request answers with"
    )
    error: dict[str, Any] | None = Field(
        default=None, description="when failed: the HTTP status and detail it would have had"
    )
