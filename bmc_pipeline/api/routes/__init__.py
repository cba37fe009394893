"""The ``/api/recovery`` routes, one module per area; :func:`recovery_router` assembles them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.security import HTTPBearer

from bmc_pipeline.api.problems import COMMON, problem_responses
from bmc_pipeline.api.routes import backups, recovery, status


def recovery_router() -> APIRouter:
    # Depends(bearer) documents the scheme in OpenAPI; the guard middleware does the checking.
    bearer = HTTPBearer(auto_error=False, description="an admin token from 'api-token create'")
    r = APIRouter(
        prefix="/api/recovery",
        dependencies=[Depends(bearer)],
        responses=problem_responses(*COMMON),
    )
    for area in (recovery, backups, status):
        r.include_router(area.router)
    return r
