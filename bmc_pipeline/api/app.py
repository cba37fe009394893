"""The recovery HTTP API: the seed's ``/api/recovery/*`` endpoints over the same engine.

Backups, restores and rollbacks run as Dagster runs in this process (tagged
``bmc/launched_by=api:<token>``), so they show in the Dagster UI's run history beside scheduled
and command-line runs; listing, validation, deletion, scan and status call the engine directly.
Everything the API does is recorded in the audit log by :mod:`bmc_pipeline.api.guard`.

Endpoints are plain ``def`` functions: FastAPI runs them in its thread pool, which is what the
engine's blocking I/O wants. One backup and one restore (or rollback) run at a time; a second
request gets 409 rather than queueing behind a long operation.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.api.guard import ApiGuard, RateLimits, problem_body, public_message
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import COLLECTION_NAME_RE, Settings, check_collection_name
from bmc_pipeline.engine import errors as E
from bmc_pipeline.engine.audit import AuditLog, audit_log_for
from bmc_pipeline.engine.deployment import Deployment

BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-(full|incremental|rollback)-[0-9a-f]{6}$"
ROLLBACK_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-rollback-[0-9a-f]{6}$"
# what a restore may name as its source: a backup id, "latest", or a manifest's file name
BACKUP_REF_PATTERN = (
    r"^(latest|[0-9]{8}T[0-9]{6}Z-(full|incremental)-[0-9a-f]{6}"
    r"|backup_(full|incremental)_[0-9]{8}T[0-9]{6}Z_[0-9a-f]{6}\.json)$"
)
COLLECTION_PATTERN = COLLECTION_NAME_RE.pattern
PROBLEM = "application/problem+json"


# -- models ----------------------------------------------------------------------------------------
class Problem(BaseModel):
    """An RFC 9457 problem document: every error this API returns has this shape."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class BackupType(str, Enum):
    full = "full"
    incremental = "incremental"


class ScanSource(str, Enum):
    all = "all"
    mongodb = "mongodb"
    filesystem = "filesystem"


class Strategy(str, Enum):
    skip_duplicates = "skip_duplicates"
    overwrite = "overwrite"
    merge = "merge"
    timestamp_based = "timestamp_based"


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
    drop_deleted: bool = False

    @field_validator("query")
    @classmethod
    def _whitelisted(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from bmc_pipeline.engine.restore import check_query

        if v is not None:
            try:
                check_query(v)
            except E.BmcError as exc:
                raise ValueError(str(exc)) from None
        return v


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_file: str = Field(
        default="latest",
        pattern=BACKUP_REF_PATTERN,
        description="a backup id, 'latest', or a manifest file name (backup_full_<ts>_<id>.json)",
    )
    target_collection: str = Field(pattern=COLLECTION_PATTERN)
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="the collection in the backup; default: target_collection",
    )
    strategy: Strategy | None = Field(default=None, description="default: restore.default_strategy")
    dry_run: bool = Field(default=True, description="plan only; set false to write")
    filters: RestoreFiltersIn | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollback_id: str = Field(pattern=ROLLBACK_ID_PATTERN)


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


class ScanResult(BaseModel):
    summary: dict[str, Any]
    report: dict[str, Any]
    report_files: list[str] = Field(description="file names in scanner.output_dir")


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {
        c: {"description": "a problem document", "content": {PROBLEM: {"schema": ref}}}
        for c in codes
    }


# statuses any protected endpoint may answer before or besides its own
COMMON = (400, 401, 403, 413, 422, 429, 500, 503)

_STATUS_OF: list[tuple[type[E.BmcError], int]] = [
    (E.BackupNotFoundError, 404),
    (E.UnknownCollectionError, 404),
    (E.GuardedError, 409),
    (E.IntegrityError, 422),
    (E.ConfigError, 422),
    (E.KeyConfigError, 503),
    (E.DatabaseError, 503),
    (E.RunFailedError, 500),
    (E.BmcError, 400),
]


def status_for(exc: E.BmcError) -> int:
    return next(code for cls, code in _STATUS_OF if isinstance(exc, cls))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values that a response can always encode.

    A lone surrogate (a broken session id in a scanned file) cannot be UTF-8, and the response
    would fail as a whole; it is shown as the six characters ``\\ud800`` instead.
    """
    text = json.dumps(obj, default=str, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)
    return json.loads(text)


class _Busy:
    """A non-blocking lock: a second long operation is refused, not queued."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self.lock.acquire(blocking=False):
            raise StarletteHTTPException(409, f"a {self.what} is already running; try again later")
        try:
            yield
        finally:
            self.lock.release()


def _actor(request: Request) -> str:
    return str(getattr(request.state, "actor", "anonymous"))


def create_app(settings: Settings, *, audit: AuditLog | None = None) -> FastAPI:
    """The API for one deployment."""
    deployment = Deployment(settings)
    audit = audit or audit_log_for(settings)
    backup_busy, restore_busy = _Busy("backup"), _Busy("restore or rollback")

    def run_restoring_job(
        request: Request, job: str, op: str, config: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """A restore or rollback as a Dagster run, one at a time: its output and run id."""
        from bmc_pipeline.launch import run_op_job

        with restore_busy.hold():
            output = run_op_job(settings, job, op, config, launched_by=f"api:{_actor(request)}")
        return output, str(output.pop("run_id"))

    app = FastAPI(
        title="bmc-backup recovery API",
        version="1",
        description=(
            "Backups, restores and recovery of the bmc-cotizaciones database. Every /api/recovery "
            "endpoint needs an admin bearer token ('bmc-backup api-token create'); see docs/API.md."
        ),
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    bearer = HTTPBearer(auto_error=False, description="an admin token from 'api-token create'")

    # -- errors as problem documents -------------------------------------------------------------
    def problem(status: int, detail: str | None, **extra: Any) -> Response:
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        return Response(
            problem_body(status, detail, **extra), status, headers=headers, media_type=PROBLEM
        )

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail) if exc.detail else None)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": public_message(str(e.get("msg")).removeprefix("Value error, ")),
            }
            for e in exc.errors()
        ]
        return problem(422, "the request is not valid: see errors", errors=errors)

    @app.exception_handler(E.BmcError)
    def _engine_error(request: Request, exc: E.BmcError) -> Response:
        return problem(status_for(exc), public_message(str(exc)))

    # -- endpoints --------------------------------------------------------------------------------
    # Depends(bearer) documents the scheme in OpenAPI; the guard does the checking.
    r = APIRouter(
        prefix="/api/recovery", dependencies=[Depends(bearer)], responses=_problems(*COMMON)
    )

    @r.get("/scan", response_model=ScanResult, summary="find recoverable conversations")
    def scan_endpoint(
        request: Request,
        source: ScanSource = ScanSource.all,
        collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    ) -> ScanResult:
        from bmc_pipeline.engine.scanner import scan_settings, write_reports

        if collection:
            check_collection_name(collection)
        db = deployment.database() if source != ScanSource.filesystem else None
        keyring = deployment.keyring_if_any()
        report = scan_settings(
            settings, source=source.value, collection=collection, db=db, keyring=keyring
        )
        j, m = write_reports(report, settings.path(settings.scanner.output_dir))
        request.state.audit = {"summary": report.summary}
        return ScanResult(
            summary=_jsonable(report.summary),
            report=_jsonable(report.as_dict()),
            report_files=[j.name, m.name],
        )

    def create_backup(
        request: Request, backup_type: BackupType, collection: str | None
    ) -> BackupCreated:
        from bmc_pipeline.launch import run_backup

        if collection:
            check_collection_name(collection)
        with backup_busy.hold():
            s = run_backup(
                settings,
                backup_type.value,
                [collection] if collection else None,
                launched_by=f"api:{_actor(request)}",
            )
        request.state.audit = {"backup_id": s["backup_id"], "run_id": s["run_id"]}
        return BackupCreated(
            backup_id=s["backup_id"],
            type=s["type"],
            timestamp=s["timestamp"],
            path=_relative(settings, s["path"]),
            size_bytes=s["size_bytes"],
            collections=s["collections"],
            filesystem=s["filesystem"],
            run_id=s["run_id"],
        )

    backup_doc = dict(
        response_model=BackupCreated,
        summary="create a backup now (a Dagster run)",
        responses=_problems(409),
    )

    @r.get("/backup", **backup_doc)  # type: ignore[arg-type]
    def backup_get(
        request: Request,
        type: BackupType = BackupType.full,
        collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    ) -> BackupCreated:
        return create_backup(request, type, collection)

    @r.post("/backup", **backup_doc)  # type: ignore[arg-type]
    def backup_post(
        request: Request,
        type: BackupType = BackupType.full,
        collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    ) -> BackupCreated:
        return create_backup(request, type, collection)

    @r.post(
        "/restore",
        response_model=RestoreResult,
        summary="restore a collection (dry run unless dry_run is false)",
        responses=_problems(404, 409),
    )
    def restore_endpoint(request: Request, body: RestoreRequest) -> RestoreResult:
        from bmc_pipeline.engine.store import backup_id_of_manifest

        check_collection_name(body.target_collection)
        source = body.collection or body.target_collection
        check_collection_name(source)
        backup_id = backup_id_of_manifest(body.backup_file) or body.backup_file
        f = body.filters or RestoreFiltersIn()
        config: dict[str, Any] = {
            "backup_id": backup_id,
            "collection": source,
            "target_collection": body.target_collection,
            "strategy": (body.strategy.value if body.strategy else None)
            or settings.restore.default_strategy,
            "dry_run": body.dry_run,
            "date_from": _iso((f.date_range.from_ if f.date_range else None) or f.date_from),
            "date_to": _iso((f.date_range.to if f.date_range else None) or f.date_to),
            "session_ids": f.session_ids or [],
            "query": json.dumps(f.query) if f.query is not None else None,
            "point_in_time": _iso(f.point_in_time),
            "drop_deleted": f.drop_deleted,
        }
        report, run_id = run_restoring_job(request, "restore_job", "restore_op", config)
        request.state.audit = {
            "backup_id": report.get("backup_id"),
            "restored": report.get("restored"),
            "rollback_id": report.get("rollback_id"),
            "run_id": run_id,
        }
        return RestoreResult(
            report=_jsonable(report),
            validation={
                "verified": report.get("verified"),
                "checks": report.get("verification", []),
                "invalid": report.get("invalid"),
                "errors": report.get("errors", [])[:50],
            },
            run_id=run_id,
        )

    @r.post(
        "/rollback",
        response_model=RollbackResult,
        summary="undo a restore from the rollback_id it reported",
        responses=_problems(404, 409),
    )
    def rollback_endpoint(request: Request, body: RollbackRequest) -> RollbackResult:
        result, run_id = run_restoring_job(
            request, "rollback_job", "rollback_op", {"rollback_id": body.rollback_id}
        )
        request.state.audit = {"rollback_id": body.rollback_id, "run_id": run_id}
        return RollbackResult(result=_jsonable(result), run_id=run_id)

    @r.get("/backups", response_model=BackupList, summary="list backups, newest first")
    def list_backups(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        type: str | None = Query(default=None, pattern="^(full|incremental|rollback)$"),
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> BackupList:
        store = deployment.store()
        keyring = deployment.keyring_if_any()
        refs = list(reversed(store.refs(backup_type=type, date_from=date_from, date_to=date_to)))
        page = refs[offset : offset + limit]
        rows = []
        for ref in page:
            row = store.describe(ref, keyring)
            row["path"] = _relative(settings, row["path"])
            if "error" in row:
                row["error"] = public_message(row["error"])
            rows.append(BackupRow(**row))
        nxt = offset + limit if offset + limit < len(refs) else None
        return BackupList(
            backups=rows,
            count=len(rows),
            total=len(refs),
            limit=limit,
            offset=offset,
            next_offset=nxt,
        )

    @r.delete(
        "/backups/{backup_id}",
        response_model=Deleted,
        summary="delete one backup (confirm must repeat its id; retention guards apply)",
        responses=_problems(404, 409),
    )
    def delete_backup_endpoint(
        request: Request,
        backup_id: Annotated[str, PathParam(pattern=BACKUP_ID_PATTERN)],
        confirm: Annotated[
            str,
            Query(
                pattern=BACKUP_ID_PATTERN,
                description="the backup id again: deleting is permanent",
            ),
        ],
    ) -> Deleted:
        from bmc_pipeline.engine.retention import delete_backup

        if confirm != backup_id:
            raise StarletteHTTPException(
                400,
                f"confirm is {confirm}, not the id in the path; deleting is permanent, so repeat "
                f"the id exactly: ?confirm={backup_id}",
            )
        result = delete_backup(
            deployment.store(), deployment.keyring(), backup_id, deployment.remote()
        )
        request.state.audit = {"deleted": backup_id}
        return Deleted(**result)

    @r.get(
        "/validate/{backup_id}",
        response_model=Validation,
        summary="verify a backup completely: checksums, every segment, counts",
        responses=_problems(404),
    )
    def validate_endpoint(
        request: Request,
        backup_id: Annotated[
            str, PathParam(pattern=f"^latest$|{BACKUP_ID_PATTERN}", max_length=40)
        ],
    ) -> Validation:
        from bmc_pipeline.engine.validate import validate_backup

        store = deployment.store()
        keyring = deployment.keyring()
        ref = store.resolve(backup_id)
        report = validate_backup(store, ref, keyring, blobs=deployment.blobs(keyring)).as_dict()
        request.state.audit = {"backup_id": ref.backup_id, "ok": report["ok"]}
        report["errors"] = [public_message(e) for e in report["errors"]]
        for fc in report["files"]:
            if fc.get("error"):
                fc["error"] = public_message(fc["error"])
        return Validation(**report)

    @r.get("/status", summary="backup health: freshness, success rates, storage, risks")
    def status_endpoint() -> dict[str, Any]:
        from bmc_pipeline.launch import health_now

        return dict(_jsonable(health_now(settings)))

    app.include_router(r)
    tokens = TokenStore.for_settings(settings)
    rates = RateLimits(settings.api.rate_limit_get, settings.api.rate_limit_post)
    app.add_middleware(
        ApiGuard,
        settings=settings,
        tokens=tokens,
        audit=audit,
        rate_limits=rates,
    )
    app.state.audit = audit
    return app


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def _relative(settings: Settings, path: str) -> str:
    """A path under the backup directory, relative to it (the API never shows server paths)."""
    p, root = Path(path), settings.backup_dir
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return p.name
