"""The recovery HTTP API: the seed's ``/api/recovery/*`` endpoints over the same engine.

Backups, restores and rollbacks run as Dagster runs in this process (tagged
``bmc/launched_by=api:<token>``), so they show in the Dagster UI's run history beside scheduled
and command-line runs; listing, validation, deletion, scan and status call the engine directly.
Everything the API does is recorded in the audit log by :mod:`bmc_pipeline.api.guard`.

Routes live in ``api/routes/`` (one module per area) and are plain ``def`` functions: FastAPI runs them in its thread pool, which is what the
engine's blocking I/O wants. One backup and one restore (or rollback) run at a time; a second
request gets 409 rather than queueing behind a long operation.
"""

from __future__ import annotations

from fastapi import FastAPI

from bmc_pipeline.api.guard import ApiGuard, RateLimits
from bmc_pipeline.api.models import (
    BACKUP_ID_PATTERN,
    BACKUP_REF_PATTERN,
    COLLECTION_PATTERN,
    ROLLBACK_ID_PATTERN,
)
from bmc_pipeline.api.problems import PROBLEM, install_handlers, status_for
from bmc_pipeline.api.routes import recovery_router
from bmc_pipeline.api.state import AppState
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import AuditLog, audit_log_for
from bmc_pipeline.engine.deployment import Deployment


def create_app(settings: Settings, *, audit: AuditLog | None = None) -> FastAPI:
    """The API for one deployment: the routes, the problem handlers and the guard."""
    audit = audit or audit_log_for(settings)
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
    app.state.bmc = AppState(settings, Deployment(settings))
    install_handlers(app)
    app.include_router(recovery_router())
    app.add_middleware(
        ApiGuard,
        settings=settings,
        tokens=TokenStore.for_settings(settings),
        audit=audit,
        rate_limits=RateLimits(settings.api.rate_limit_get, settings.api.rate_limit_post),
    )
    app.state.audit = audit
    return app


__all__ = [
    "BACKUP_ID_PATTERN",
    "BACKUP_REF_PATTERN",
    "COLLECTION_PATTERN",
    "PROBLEM",
    "ROLLBACK_ID_PATTERN",
    "create_app",
    "status_for",
]
