"""What stands in front of every API request: rate limits, size limit, authentication, audit.

One ASGI middleware, so the order is explicit and every request, even one refused before it
reaches a route (401, 413, 429, 404 for a traversal attempt), is accounted for in the audit log:

1. a request without a valid bearer token, to any path, spends its client address's budget
   first (429 beyond it; such refusals are tallied, one audit line per address a minute);
2. the body is read up to ``api.max_body_bytes`` (413 beyond) within ``api.body_timeout_s``
   (408 after), then replayed to the app;
3. for ``/api/recovery/*``: 401 without a valid token; the token's own rate limit (429 with
   ``Retry-After``), then its role (403 unless admin);
4. a change (an admin's POST, DELETE, ...) first writes a "started" audit line: if the log cannot
   be written the change is not made (503);
5. the app runs; security headers (HSTS on HTTPS, ``nosniff``, ``no-store``) go on every
   response, and an unexpected exception becomes a 500 problem that names an incident id only;
6. one audit line: who, what (a bounded summary, see :mod:`bmc_pipeline.api.request_record`),
   status, duration, and whether the request looked like path traversal or operator injection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bmc_pipeline.api.request_record import (
    MAX_PATH_CHARS,
    RefusalTally,
    cut,
    summarize,
    suspicions,
)
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
        self.body_s = settings.api.body_timeout_s
        self.tally = RefusalTally()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flushing_at_shutdown(send))
            return
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

        self._write_tallies()
        body = b""
        recorded = True
        try:
            refused = self._admit(scope, state)
            if refused is not None and refused[0] == 429 and not state.get("actor"):
                # a stranger over the address budget: counted, written as one line a minute
                recorded = False
                raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
                query = scope.get("query_string", b"")
                self.tally.add(_client(scope), raw, suspicions(scope["path"], raw, query, b""))
            if refused is not None:
                status, detail, headers = refused
                await self._problem(send_wrapped, status, detail, headers)
                return
            body_or_none = await self._read_body(scope, receive)
            if body_or_none is None:
                await self._problem(send_wrapped, 413, f"request body over {self.max_body} bytes")
                return
            body = body_or_none
            if state.get("admin") and scope["method"] not in READ_METHODS:
                failure = self._record_start(scope, state, body)
                if failure is not None:
                    recorded = False
                    await self._problem(send_wrapped, 503, failure)
                    return
            await self.app(scope, _replay(body, receive), send_wrapped)
        except _BodyTimeout:
            if sent["status"] is None:
                await self._problem(
                    send_wrapped, 408, f"the request body did not arrive within {self.body_s:g} s"
                )
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
            if recorded:
                self._record(scope, state, sent, body, time.monotonic() - started)

    def _flushing_at_shutdown(self, send: Send) -> Send:
        """``send`` for the lifespan scope: refusals still counted are written before the end."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self._write_tallies(everything=True)
            await send(message)

        return wrapped

    def _write_tallies(self, *, everything: bool = False) -> None:
        for line in self.tally.due(everything=everything):
            problem = safe_append(
                self.audit,
                actor="anonymous",
                via="api",
                action="refused requests",
                params={"paths": line.pop("paths")},
                outcome="refused",
                detail=f"{line['count']} requests from {line['client']} refused by the "
                f"address budget in the last {line['window_s']:g} s",
                extra=line,
            )
            if problem:
                log.error(problem)

    def _record_start(self, scope: Scope, state: dict[str, Any], body: bytes) -> str | None:
        """Write the line saying a change begins; the reason it could not be written, if not.

        A change the audit log cannot record is not made: the client gets a 503 saying why.
        """
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        try:
            self.audit.append(
                actor=str(state["actor"]),
                via="api",
                action=f"{scope['method']} {scope['path']}",
                params=summarize(raw, scope.get("query_string", b""), body, keep_body=True),
                outcome="started",
                extra={"client": _client(scope)},
            )
        except (OSError, BmcError) as exc:
            log.error("audit log %s cannot be written: %s", self.audit.path.name, exc)
            return (
                f"the audit log cannot be written ({public_message(str(exc))}); nothing was done. "
                "Free space or fix the log's permissions, then try again"
            )
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, ``None`` past ``api.max_body_bytes``; a body that has not arrived
        within ``api.body_timeout_s`` raises :class:`_BodyTimeout` (a slow client would
        otherwise hold a worker as long as it likes)."""
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return None
        deadline = time.monotonic() + self.body_s
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise _BodyTimeout from None
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
        """Why the request is refused (status, detail, headers), or ``None`` to let it in.

        Every request without a valid token, to any path, spends its address's budget first:
        strangers cannot grow the audit log faster than that budget allows.
        """
        method = scope["method"]
        address = _client(scope)
        protected = scope["path"].startswith(PROTECTED_PREFIX)
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
            if not protected:
                return None
            if not presented:
                return 401, "an admin bearer token is required", _challenge("")
            return 401, "the bearer token is not valid", _challenge("invalid_token")
        if not protected:
            return None
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
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        detail = None
        if status >= 400:
            try:
                detail = json.loads(sent["problem"]).get("detail")
            except (ValueError, AttributeError):
                detail = None
        extra = dict(state.get("audit") or {})
        extra["client"] = _client(scope)
        extra["status"] = status
        found = suspicions(scope["path"], raw, query, body)
        if found:
            extra["suspicious"] = found
        problem = safe_append(
            self.audit,
            actor=str(state.get("actor", "anonymous")),
            via="api",
            action=f"{scope['method']} {cut(scope['path'], MAX_PATH_CHARS)}",
            params=summarize(raw, query, body, keep_body=bool(state.get("admin"))),
            outcome="ok" if 0 < status < 400 else ("refused" if status < 500 else "error"),
            detail=detail,
            duration_s=duration,
            extra=extra,
        )
        if problem:
            log.error(problem)


class _BodyTimeout(Exception):
    """The request body did not arrive in time (answered 408)."""


def _client(scope: Scope) -> str:
    return str((scope.get("client") or ("unknown", 0))[0])


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
