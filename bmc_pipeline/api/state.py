"""What every route of one app shares: the settings, the deployment and the one-at-a-time locks.

Held on ``app.state.bmc`` and reached through :func:`app_state`, so routes are plain module-level
functions that can be imported and tested alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.launch import run_op_job


class Busy:
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


@dataclass
class AppState:
    settings: Settings
    deployment: Deployment
    backup_busy: Busy = field(default_factory=lambda: Busy("backup"))
    restore_busy: Busy = field(default_factory=lambda: Busy("restore or rollback"))

    def run_restoring_job(
        self, request: Request, job: str, op: str, config: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """A restore or rollback as a Dagster run, one at a time: its output and run id."""
        with self.restore_busy.hold():
            run = run_op_job(self.settings, job, op, config, launched_by=f"api:{actor(request)}")
        return run.output, run.run_id


def app_state(request: Request) -> AppState:
    state = request.app.state.bmc
    assert isinstance(state, AppState)
    return state


def actor(request: Request) -> str:
    return str(getattr(request.state, "actor", "anonymous"))
