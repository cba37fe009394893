"""``/scan``, ``/restore``, ``/rollback``, ``/drill``, ``/runs``: finding what is recoverable,
bringing it back, proving it can be.

Restores, rollbacks and drills run as Dagster runs in this process, one at a time: answered when
they end, or at once with 202 (``Prefer: respond-async``) and followed at ``/runs/{run_id}``. The
scan calls the engine directly (it only reads).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.api.models import (
    COLLECTION_PATTERN,
    DrillResult,
    RestoreFiltersIn,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    RunAccepted,
    RunStatus,
    ScanResult,
)
from bmc_pipeline.api.problems import jsonable, problem_responses, under_root
from bmc_pipeline.api.state import BackgroundRun, actor, app_state
from bmc_pipeline.config import check_collection_name
from bmc_pipeline.engine.scanner import scan_settings, write_reports
from bmc_pipeline.engine.store import backup_id_of_manifest
from bmc_pipeline.engine.vocabulary import Source
from bmc_pipeline.jobs.maintenance import DRILL_JOB
from bmc_pipeline.launch import run_report_asset

RUN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
PreferHeader = Annotated[
    str | None, Header(description="'respond-async': answer 202 at once, follow /runs/{run_id}")
]

router = APIRouter()


@router.get("/scan", response_model=ScanResult, summary="find recoverable conversations")
def scan_endpoint(
    request: Request,
    source: Source = Source.all,
    collection: Annotated[str | None, Query(pattern=COLLECTION_PATTERN)] = None,
) -> ScanResult:
    state = app_state(request)
    if collection:
        check_collection_name(collection)
    db = state.deployment.database() if source != Source.filesystem else None
    report = scan_settings(
        state.settings,
        source=source,
        collection=collection,
        db=db,
        keyring=state.deployment.keyring_if_any(),
    )
    j, m = write_reports(report, state.settings.path(state.settings.scanner.output_dir))
    request.state.audit = {"summary": report.summary}
    return ScanResult(
        summary=jsonable(report.summary),
        report=jsonable(under_root(report.as_dict(), state.settings.files_root)),
        report_files=[j.name, m.name],
    )


@router.post(
    "/restore",
    response_model=RestoreResult,
    summary="restore a collection (dry run unless dry_run is false); with the header "
    "'Prefer: respond-async', answered 202 at once and followed at /runs/{run_id}",
    responses={**problem_responses(404, 409), 202: {"model": RunAccepted}},
)
def restore_endpoint(
    request: Request, body: RestoreRequest, prefer: PreferHeader = None
) -> RestoreResult | JSONResponse:
    state = app_state(request)
    strategy = body.strategy or state.settings.restore.default_strategy
    config: dict[str, Any] = {
        "backup_id": backup_id_of_manifest(body.backup_file) or body.backup_file,
        "strategy": strategy.value,
        "dry_run": body.dry_run,
        "indexes": body.indexes,
        "auto_rollback": body.auto_rollback,
        **(body.filters or RestoreFiltersIn()).op_config(),
    }
    if body.target_collection is None or body.collections is not None:
        for name in body.collections or []:
            check_collection_name(name)
        config.update(collections=body.collections or [], files=body.files)
    else:
        check_collection_name(body.target_collection)
        source = body.collection or body.target_collection
        check_collection_name(source)
        config.update(collection=source, target_collection=body.target_collection)
    if wants_async(prefer):
        return accepted(request, state.start_restoring_job(
            request, "restore_job", "restore_op", config,
            lambda report, run_id: jsonable(_restore_result(report, run_id).model_dump()),
        ))  # fmt: skip
    report, run_id = state.run_restoring_job(request, "restore_job", "restore_op", config)
    request.state.audit = {
        "backup_id": report.get("backup_id"),
        "restored": report.get("restored"),
        "rollback_id": report.get("rollback_id"),
        "run_id": run_id,
    }
    return _restore_result(report, run_id)


def _restore_result(report: dict[str, Any], run_id: str) -> RestoreResult:
    parts = list(report.get("collections", {}).values()) or [report]
    checks = [c for p in parts for c in p.get("verification", [])]
    if report.get("files"):
        checks += report["files"]["verification"]
    return RestoreResult(
        report=jsonable(report),
        validation={
            "verified": report.get("verified"),
            "checks": checks,
            "invalid": sum(p.get("invalid", 0) for p in parts),
            "errors": [e for p in parts for e in p.get("errors", [])][:50],
        },
        run_id=run_id,
    )


@router.post(
    "/rollback",
    response_model=RollbackResult,
    summary="undo a restore from the rollback_id it reported ('Prefer: respond-async' as for "
    "/restore)",
    responses={**problem_responses(404, 409), 202: {"model": RunAccepted}},
)
def rollback_endpoint(
    request: Request, body: RollbackRequest, prefer: PreferHeader = None
) -> RollbackResult | JSONResponse:
    config = {"rollback_id": body.rollback_id, "force": body.force}
    state = app_state(request)
    if wants_async(prefer):
        return accepted(request, state.start_restoring_job(
            request, "rollback_job", "rollback_op", config,
            lambda result, run_id: jsonable(RollbackResult(result=result, run_id=run_id).model_dump()),
        ))  # fmt: skip
    result, run_id = state.run_restoring_job(request, "rollback_job", "rollback_op", config)
    request.state.audit = {"rollback_id": body.rollback_id, "run_id": run_id}
    return RollbackResult(result=jsonable(result), run_id=run_id)


@router.post(
    "/drill",
    response_model=DrillResult,
    summary="restore everything into the scratch database now and verify it (the restore drill); "
    "'Prefer: respond-async' as for /restore; report.ok is the verdict",
    responses={**problem_responses(409), 202: {"model": RunAccepted}},
)
def drill_endpoint(request: Request, prefer: PreferHeader = None) -> DrillResult | JSONResponse:
    state = app_state(request)
    who = f"api:{actor(request)}"
    state.deployment.keyring()  # no key, no drill: refused now, not after a 202

    def drill(run_id: str | None = None) -> DrillResult:
        done = run_report_asset(
            state.settings, DRILL_JOB, "restore drill", launched_by=who, run_id=run_id
        )
        return DrillResult(report=jsonable(done.output), run_id=done.run_id)

    if wants_async(prefer):
        return accepted(request, state.start_in_background(
            request, state.drill_busy, "drill", lambda run_id: drill(run_id).model_dump(),
        ))  # fmt: skip
    with state.drill_busy.hold():
        result = drill()
    request.state.audit = {"ok": result.report["ok"], "run_id": result.run_id}
    return result


@router.get(
    "/runs/{run_id}",
    response_model=RunStatus,
    summary="a backup, restore, rollback or drill started with 'Prefer: respond-async': status, "
    "elapsed time, result",
    responses=problem_responses(404),
)
def run_endpoint(
    request: Request, run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)]
) -> RunStatus:
    state = app_state(request)
    run = state.runs.get(run_id)
    if run is None:
        raise StarletteHTTPException(
            404, f"no run {run_id} was started by this server since it started"
        )
    return RunStatus(**run.as_dict(), elapsed_s=run.elapsed_s())


def wants_async(prefer: str | None) -> bool:
    """RFC 7240: ``Prefer: respond-async`` (among other preferences, any case)."""
    return bool(prefer) and "respond-async" in [
        p.strip().split("=")[0].lower() for p in str(prefer).split(",")
    ]


def accepted(request: Request, run: BackgroundRun) -> JSONResponse:
    url = f"/api/recovery/runs/{run.run_id}"
    request.state.audit = {"run_id": run.run_id, "async": True}
    body = RunAccepted(run_id=run.run_id, status=run.status, status_url=url)
    return JSONResponse(body.model_dump(), status_code=202, headers={"location": url})
