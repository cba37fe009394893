"""What stands in front of every API request: size limit, rate limits, authentication, audit.

One ASGI middleware, so the order is explicit and every request, even one refused before it
reaches a route (401, 413, 429, 404 for a traversal attempt), is recorded in the audit log:

1. the body is read up to ``api.max_body_bytes`` (413 beyond), then replayed to the app;
2. for ``/api/recovery/*``: the bearer token; without a valid one the client address's rate
   limit (429), then 401;
   the token's own rate limit (429 with ``Retry-After``), then its role (403 unless admin);
3. the app runs; security headers (HSTS on HTTPS, ``nosniff``, ``no-store``) go on every
   response, and an unexpected exception becomes a 500 problem that names an incident id only;
4. one audit line: who, what, parameters without secrets, status, duration, and whether the
   request looked like path traversal or operator injection.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import AuditLog, safe_append
from bmc_pipeline.engine.errors import BmcError

log = logging.getLogger("bmc_pipeline.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/api/recovery"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_INJECTION = re.compile(rb"\$(where|function|accumulator|expr|eval)\b", re.I)
_TRAVERSAL = re.compile(r"(^|/)\.\.(/|$)|%2e%2e|%2f|%5c|\\|//", re.I)
# an absolute path in a message: a slash not preceded by a word character, ':' or another slash
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"(),;]+")


def public_message(text: str) -> str:
    """``text`` without directory names: an absolute path keeps only its last component.

    Error messages of the engine name files so a person at the console can act on them; over
    HTTP the same message must not tell a client where things live on the server.
    """
    return _ABS_PATH.sub(lambda m: m.group().rstrip("/").rsplit("/", 1)[-1] or "/", text)


def problem_body(status: int, detail: str | None = None, **extra: Any) -> bytes:
    """An RFC 9457 problem document."""
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    return json.dumps(doc).encode()


class RateLimits:
    """Moving-window limits per token and per client address, one budget for reads, one for writes."""

    def __init__(self, read: str, write: str) -> None:
        self.items = {"read": limits.parse(read), "write": limits.parse(write)}
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, method: str, kind: str, who: str) -> int | None:
        """Count one request; ``None`` if allowed, else the seconds until one more is."""
        budget = "read" if method in READ_METHODS else "write"
        item = self.items[budget]
        if self.limiter.hit(item, budget, kind, who):
            return None
        reset = self.limiter.get_window_stats(item, budget, kind, who).reset_time
        return max(1, math.ceil(reset - time.time()))


class ApiGuard:
    """The middleware described in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        tokens: TokenStore,
        audit: AuditLog,
        rate_limits: RateLimits,
    ) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.audit = audit
        self.rates = rate_limits
        self.max_body = settings.api.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state: dict[str, Any] = scope.setdefault("state", {})
        sent: dict[str, Any] = {"status": None, "problem": b""}
        https = scope.get("scheme") == "https"

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if https and self.settings.api.hsts_max_age:
                    hsts = f"max-age={self.settings.api.hsts_max_age}; includeSubDomains"
                    headers.append((b"strict-transport-security", hsts.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and (sent["status"] or 0) >= 400:
                sent["problem"] += message.get("body", b"")[:2048]
            await send(message)

        body = b""
        try:
            body_or_none = await self._read_body(scope, receive)
            if body_or_none is None:
                await self._problem(send_wrapped, 413, f"request body over {self.max_body} bytes")
                return
            body = body_or_none
            if scope["path"].startswith(PROTECTED_PREFIX):
                refused = self._admit(scope, state)
                if refused is not None:
                    status, detail, headers = refused
                    await self._problem(send_wrapped, status, detail, headers)
                    return
            await self.app(scope, _replay(body, receive), send_wrapped)
        except Exception:
            incident = secrets.token_hex(4)
            log.exception("incident %s: %s %s", incident, scope["method"], scope["path"])
            if sent["status"] is None:
                await self._problem(
                    send_wrapped,
                    500,
                    f"internal error (incident {incident}); the server log has the details",
                )
        finally:
            self._record(scope, state, sent, body, time.monotonic() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _admit(
        self, scope: Scope, state: dict[str, Any]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        method = scope["method"]
        address = (scope.get("client") or ("unknown", 0))[0]
        auth = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                auth = value.decode("latin-1")
        scheme, _, secret = auth.partition(" ")
        presented = scheme.lower() == "bearer" and bool(secret.strip())
        try:  # the tokens file is read on each request, so a revoked token stops at once
            token = self.tokens.authenticate(secret.strip()) if presented else None
        except BmcError as exc:
            log.error("API tokens cannot be read: %s", exc)
            return 503, "the server's token configuration is unusable; see its log", []
        if token is not None:
            state["actor"] = f"token:{token.name}"  # known even if refused below, for the audit
        if token is None:
            # the address budget is spent by requests without a valid token only: guessing
            # tokens is limited, and strangers on the same address (everyone, behind a proxy)
            # cannot lock out a person who has one
            retry = self.rates.hit(method, "address", address)
            if retry is not None:
                return 429, f"too many requests from {address}", _retry(retry)
            if not presented:
                return 401, "an admin bearer token is required", _challenge("")
            return 401, "the bearer token is not valid", _challenge("invalid_token")
        retry = self.rates.hit(method, "token", token.name)
        if retry is not None:
            return 429, f"too many requests with token {token.name}", _retry(retry)
        if token.role != "admin":
            return 403, f"token {token.name} has role {token.role}; this API is admin-only", []
        state["admin"] = True
        return None

    async def _problem(
        self,
        send: Send,
        status: int,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = problem_body(status, detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        sent: dict[str, Any],
        body: bytes,
        duration: float,
    ) -> None:
        status = sent["status"] or 0
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        params: dict[str, Any] = dict(parse_qsl(query.decode("latin-1")))
        values = list(params.values())
        params["path"] = raw_path.decode("latin-1")
        if body:
            try:
                params["body"] = json.loads(body)
                values += list(_strings(params["body"]))
            except ValueError:
                params["body"] = f"<{len(body)} bytes, not JSON>"
        suspicious = []
        if (
            _TRAVERSAL.search(params["path"])
            or _TRAVERSAL.search(scope["path"])
            or any(_looks_like_path(v) for v in values)
        ):
            suspicious.append("path traversal")
        if _INJECTION.search(body) or _INJECTION.search(query):
            suspicious.append("operator injection")
        detail = None
        if status >= 400:
            try:
                detail = json.loads(sent["problem"]).get("detail")
            except (ValueError, AttributeError):
                detail = None
        extra = dict(state.get("audit") or {})
        extra["client"] = (scope.get("client") or ("unknown", 0))[0]
        extra["status"] = status
        if suspicious:
            extra["suspicious"] = suspicious
        problem = safe_append(
            self.audit,
            actor=str(state.get("actor", "anonymous")),
            via="api",
            action=f"{scope['method']} {scope['path']}",
            params=params,
            outcome="ok" if 0 < status < 400 else ("refused" if status < 500 else "error"),
            detail=detail,
            duration_s=duration,
            extra=extra,
        )
        if problem:
            log.error(problem)


def _strings(value: Any, depth: int = 0) -> Any:
    """Every string in a parsed JSON body (bounded depth: bodies are small and limited)."""
    if depth > 20:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, depth + 1)


def _looks_like_path(value: str) -> bool:
    """A parameter that tries to name a file: ``..`` segments, or an absolute path."""
    parts = re.split(r"[/\\]", value)
    return (
        ".." in parts
        or value.startswith(("/", "~", "\\"))
        or bool(re.match(r"^[A-Za-z]:[/\\]", value))
    )


def _retry(seconds: int) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(seconds).encode())]


def _challenge(error: str) -> list[tuple[bytes, bytes]]:
    value = 'Bearer realm="bmc-backup"' + (f', error="{error}"' if error else "")
    return [(b"www-authenticate", value.encode())]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body once, then defers to the real one."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
