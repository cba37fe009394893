"""``GET /status``: the health report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from bmc_pipeline.api.problems import jsonable
from bmc_pipeline.api.state import app_state
from bmc_pipeline.jobs.history import health_now

router = APIRouter()


@router.get("/status", summary="backup health: freshness, success rates, storage, risks")
def status_endpoint(request: Request) -> dict[str, Any]:
    return dict(jsonable(health_now(app_state(request).settings)))
