"""``bmc-backup api serve``: the API under uvicorn, HTTPS unless it only listens on loopback.

Plain HTTP on an address other than loopback would send bearer tokens and backup data in clear,
so it is refused unless ``allow_plain_http`` says that a TLS-terminating proxy sits in front.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import stat
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bmc_pipeline.api.app import create_app
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_files(settings: Settings, cert: str | None, key: str | None) -> tuple[Path, Path] | None:
    cert = cert or settings.api.tls_cert
    key = key or settings.api.tls_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(
            "TLS needs both a certificate and its private key: give --cert and --key "
            "(or api.tls_cert and api.tls_key in backup_config.json)"
        )
    cert_path, key_path = settings.path(cert), settings.path(key)
    for what, p in (("certificate", cert_path), ("private key", key_path)):
        if not p.is_file():
            raise ConfigError(f"TLS {what} {p} does not exist or is not a file")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"TLS private key {key_path} has mode {mode:o}, readable by others; "
            f"run: chmod 600 {key_path}"
        )
    return cert_path, key_path


def build_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    cert: str | None = None,
    key: str | None = None,
    allow_plain_http: bool = False,
    log_level: str = "info",
) -> tuple[uvicorn.Server, str]:
    """A configured uvicorn server and the URL it will answer on; refuses unsafe listeners."""
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    tls = _tls_files(settings, cert, key)
    if tls is None and not is_loopback(host) and not allow_plain_http:
        raise ConfigError(
            f"refusing to serve plain HTTP on {host}, which is not a loopback address: tokens "
            "and backup data would cross the network in clear. Give --cert and --key, or listen "
            "on 127.0.0.1, or pass --allow-plain-http if a TLS proxy terminates connections"
        )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
        log_level=log_level,
        server_header=False,
        # client addresses (rate limits, audit) are the peer's, unless the peer is a named proxy
        proxy_headers=bool(settings.api.trusted_proxies),
        forwarded_allow_ips=list(settings.api.trusted_proxies) or None,
        timeout_keep_alive=5,
        http=header_deadline_protocol(settings.api.header_timeout_s),
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, WithoutQueryStrings) for f in access.filters):
        access.addFilter(WithoutQueryStrings())
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    return uvicorn.Server(config), f"{scheme}://{shown}:{port}"


class WithoutQueryStrings(logging.Filter):
    """Access log lines show the path only: a query string may hold a secret someone sent there
    by mistake (a token in ``?token=``), and the access log is read by more people than need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers take too long.

    uvicorn times out idle keep-alive connections but not a client that sends its headers a byte
    at a time; such clients, a few hundred of them, would hold every connection the server has.
    The clock starts when the connection opens (or the first byte of a next request arrives) and
    stops when the headers are complete; the body has its own deadline in the guard.
    """

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_clock()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._stop_clock()  # the headers are in: a request is being answered
            elif self._deadline is None and not self.transport.is_closing():
                self._start_clock()  # the first bytes of a next request on this connection

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._stop_clock()  # idle now: the keep-alive timeout applies

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_clock()
            super().connection_lost(exc)

        def _start_clock(self) -> None:
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _stop_clock(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                peer = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
                self.logger.info("%sclosed: request headers not complete in %gs", peer, seconds)
                self.transport.close()

    return HeaderDeadline
