"""``/backup``, ``/backups``, ``/backups/{id}`` and ``/validate/{id}``: making, listing, deleting and
checking backups. A backup runs as a Dagster run in this process, one at a time: answered when it
ends, or at once with 202 (``Prefer: respond-async``) and followed at ``/runs/{run_id}``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.api.guard import public_message
from bmc_pipeline.api.models import (
    BACKUP_ID_PATTERN,
    COLLECTION_PATTERN,
    BackupCreated,
    BackupList,
    BackupRow,
    Deleted,
    RunAccepted,
    Validation,
)
from bmc_pipeline.api.problems import jsonable, problem_responses, relative
from bmc_pipeline.api.routes.recovery import PreferHeader, accepted, wants_async
from bmc_pipeline.api.state import AppState, actor, app_state
from bmc_pipeline.config import check_collection_name
from bmc_pipeline.engine.retention import delete_backup
from bmc_pipeline.engine.validate import validate_backup
from bmc_pipeline.engine.vocabulary import BackupType, ScheduledBackupType
from bmc_pipeline.launch import configured_collections, run_backup

router = APIRouter()


@router.post(
    "/backup",
    response_model=BackupCreated,
    summary="create a backup now (a Dagster run); with the header 'Prefer: respond-async', "
    "answered 202 at once and followed at /runs/{run_id}",
    responses={**problem_responses(404, 409), 202: {"model": RunAccepted}},
)
def backup_endpoint(
    request: Request,
    type: ScheduledBackupType = ScheduledBackupType.full,
    collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
    prefer: PreferHeader = None,
) -> BackupCreated | JSONResponse:
    state = app_state(request)
    if collection:
        check_collection_name(collection)
    who = f"api:{actor(request)}"
    names = [collection] if collection else None
    if wants_async(prefer):
        configured_collections(state.settings, names)  # refused now, not after the 202
        return accepted(request, state.start_in_background(
            request, state.backup_busy, "backup",
            lambda run_id: jsonable(_created(state, run_backup(
                state.settings, type.value, names, launched_by=who, run_id=run_id,
            )).model_dump()),
        ))  # fmt: skip
    with state.backup_busy.hold():
        s = run_backup(state.settings, type.value, names, launched_by=who)
    request.state.audit = {"backup_id": s["backup_id"], "run_id": s["run_id"]}
    return _created(state, s)


def _created(state: AppState, s: dict[str, Any]) -> BackupCreated:
    """The answer to a finished backup, from its summary."""
    return BackupCreated(
        backup_id=s["backup_id"],
        type=s["type"],
        timestamp=s["timestamp"],
        path=relative(state.settings, s["path"]),
        size_bytes=s["size_bytes"],
        collections=s["collections"],
        filesystem=s["filesystem"],
        run_id=s["run_id"],
    )


@router.get("/backups", response_model=BackupList, summary="list backups, newest first")
def list_backups(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    type: BackupType | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> BackupList:
    state = app_state(request)
    store = state.deployment.store()
    keyring = state.deployment.keyring_if_any()
    kind = type.value if type else None
    refs = list(reversed(store.refs(backup_type=kind, date_from=date_from, date_to=date_to)))
    rows = []
    for ref in refs[offset : offset + limit]:
        row = store.describe(ref, keyring)
        row["path"] = relative(state.settings, row["path"])
        if "error" in row:
            row["error"] = public_message(row["error"])
        rows.append(BackupRow(**row))
    return BackupList(
        backups=rows,
        count=len(rows),
        total=len(refs),
        limit=limit,
        offset=offset,
        next_offset=offset + limit if offset + limit < len(refs) else None,
    )


@router.delete(
    "/backups/{backup_id}",
    response_model=Deleted,
    summary="delete one backup (confirm must repeat its id; retention guards apply)",
    responses=problem_responses(404, 409),
)
def delete_backup_endpoint(
    request: Request,
    backup_id: Annotated[str, PathParam(pattern=BACKUP_ID_PATTERN)],
    confirm: Annotated[
        str,
        Query(pattern=BACKUP_ID_PATTERN, description="the backup id again: deleting is permanent"),
    ],
) -> Deleted:
    if confirm != backup_id:
        raise StarletteHTTPException(
            400,
            f"confirm is {confirm}, not the id in the path; deleting is permanent, so repeat "
            f"the id exactly: ?confirm={backup_id}",
        )
    d = app_state(request).deployment
    result = delete_backup(d.store(), d.keyring(), backup_id, d.remote())
    request.state.audit = {"deleted": backup_id}
    return Deleted(**result)


@router.get(
    "/validate/{backup_id}",
    response_model=Validation,
    summary="verify a backup completely: checksums, every segment, counts",
    responses=problem_responses(404),
)
def validate_endpoint(
    request: Request,
    backup_id: Annotated[str, PathParam(pattern=f"^latest$|{BACKUP_ID_PATTERN}", max_length=40)],
) -> Validation:
    d = app_state(request).deployment
    store = d.store()
    keyring = d.keyring()
    ref = store.resolve(backup_id)
    report = validate_backup(store, ref, keyring, blobs=d.blobs(keyring)).as_dict()
    request.state.audit = {"backup_id": ref.backup_id, "ok": report["ok"]}
    report["errors"] = [public_message(e) for e in report["errors"]]
    for fc in report["files"]:
        if fc.get("error"):
            fc["error"] = public_message(fc["error"])
    return Validation(**report)
