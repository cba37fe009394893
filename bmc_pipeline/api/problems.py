"""Errors as RFC 9457 problem documents: engine errors, HTTP errors and invalid requests.

The HTTP status of an engine error is the one declared on its class in ``engine/errors.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bmc_pipeline.api.guard import problem_body, public_message
from bmc_pipeline.config import Settings
from bmc_pipeline.engine import errors as E

PROBLEM = "application/problem+json"
# statuses any protected endpoint may answer before or besides its own
COMMON = (400, 401, 403, 413, 422, 429, 500, 503)


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries saying these statuses answer with a problem document."""
    ref = {"$ref": "#/components/schemas/Problem"}
    return {
        c: {"description": "a problem document", "content": {PROBLEM: {"schema": ref}}}
        for c in codes
    }


def status_for(exc: E.BmcError) -> int:
    return exc.http_status


def problem(status: int, detail: str | None, **extra: Any) -> Response:
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return Response(
        problem_body(status, detail, **extra), status, headers=headers, media_type=PROBLEM
    )


def install_handlers(app: FastAPI) -> None:
    """Every error the app can raise leaves as a problem document."""

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


_SURROGATE = re.compile("[\ud800-\udfff]")


def jsonable(obj: Any) -> Any:
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


def under_root(obj: Any, root: Path) -> Any:
    """``obj`` with every string that names a place under ``root`` made relative to it (the API
    never shows server paths); ``root`` itself becomes ``"."``."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    plain = str(root).rstrip("/") + "/"
    if isinstance(obj, str):
        for p in (prefix, plain):
            if obj.startswith(p):
                return obj[len(p) :]
        return "." if obj.rstrip("/") in (prefix[:-1], plain[:-1]) else obj
    if isinstance(obj, dict):
        return {k: under_root(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [under_root(v, root) for v in obj]
    return obj


def relative(settings: Settings, path: str) -> str:
    """A path under the backup directory, relative to it (the API never shows server paths)."""
    p, root = Path(path), settings.backup_dir
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return p.name
