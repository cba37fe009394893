"""What every route of one app shares: the settings, the deployment and the one-at-a-time locks.

Held on ``app.state.bmc`` and reached through :func:`app_state`, so routes are plain module-level
functions that can be imported and tested alone.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.api.guard import public_message
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import AuditLog, safe_append
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.launch import run_op_job

log = logging.getLogger("bmc_pipeline.api")


class Busy:
    """A non-blocking lock: a second long operation is refused, not queued."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.lock.acquire(blocking=False):
            raise StarletteHTTPException(409, f"a {self.what} is already running; try again later")

    def release(self) -> None:
        self.lock.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass
class BackgroundRun:
    """A backup, restore, rollback or drill answered with 202 and still running, or finished,
    in this server."""

    run_id: str
    kind: str
    started: str
    status: str = "running"  # running | succeeded | failed
    finished: str | None = None
    result: dict[str, Any] | None = None  # the body the synchronous request answers with
    error: dict[str, Any] | None = None  # {"status": http status, "detail": ...}

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def elapsed_s(self) -> float:
        end = datetime.fromisoformat(self.finished) if self.finished else datetime.now(timezone.utc)
        return round((end - datetime.fromisoformat(self.started)).total_seconds(), 1)


@dataclass
class AppState:
    settings: Settings
    deployment: Deployment
    backup_busy: Busy = field(default_factory=lambda: Busy("backup"))
    restore_busy: Busy = field(default_factory=lambda: Busy("restore or rollback"))
    drill_busy: Busy = field(default_factory=lambda: Busy("drill"))
    runs: dict[str, BackgroundRun] = field(default_factory=dict)

    def run_restoring_job(
        self, request: Request, job: str, op: str, config: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """A restore or rollback as a Dagster run, one at a time: its output and run id."""
        with self.restore_busy.hold():
            run = run_op_job(self.settings, job, op, config, launched_by=f"api:{actor(request)}")
        return run.output, run.run_id

    def start_restoring_job(
        self,
        request: Request,
        job: str,
        op: str,
        config: dict[str, Any],
        finish: Callable[[dict[str, Any], str], dict[str, Any]],
    ) -> BackgroundRun:
        """The same run as :meth:`run_restoring_job`, started in the background."""
        who = f"api:{actor(request)}"

        def work(run_id: str) -> dict[str, Any]:
            done = run_op_job(self.settings, job, op, config, launched_by=who, run_id=run_id)
            return finish(done.output, done.run_id)

        return self.start_in_background(request, self.restore_busy, job.removesuffix("_job"), work)

    def start_in_background(
        self,
        request: Request,
        busy: Busy,
        kind: str,
        work: Callable[[str], dict[str, Any]],
    ) -> BackgroundRun:
        """``work(run_id)`` (a Dagster run named ``run_id``) in a thread of its own, holding
        ``busy``: answered at once (409 if one is running), followed with ``GET /runs/{run_id}``,
        its result the body the synchronous request would have had, audited when it ends."""
        busy.acquire()
        run = BackgroundRun(str(uuid.uuid4()), kind, _now())
        self.runs[run.run_id] = run
        who = actor(request)
        audit: AuditLog = request.app.state.audit

        def target() -> None:
            try:
                run.result, run.status = work(run.run_id), "succeeded"
            except BmcError as exc:
                run.error = {"status": exc.http_status, "detail": public_message(str(exc))}
                run.status = "failed"
            except Exception:
                log.exception("run %s (%s) failed", run.run_id, kind)
                run.error = {"status": 500, "detail": "internal error; the server log has it"}
                run.status = "failed"
            finally:
                run.finished = _now()
                busy.release()
                problem = safe_append(
                    audit, actor=who, via="api", action=f"{kind} finished",
                    params={"run_id": run.run_id},
                    outcome="ok" if run.status == "succeeded" else "error",
                    detail=(run.error or {}).get("detail"),
                )  # fmt: skip
                if problem:
                    log.error(problem)

        threading.Thread(target=target, name=f"{kind}-{run.run_id[:8]}", daemon=True).start()
        return run


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def app_state(request: Request) -> AppState:
    state = request.app.state.bmc
    assert isinstance(state, AppState)
    return state


def actor(request: Request) -> str:
    return str(getattr(request.state, "actor", "anonymous"))
