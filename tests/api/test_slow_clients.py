"""Slow clients are cut off, and a client's address comes from a proxy only when it is trusted."""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

import pytest

from bmc_pipeline.config import Settings
from tests.support.apiserver import Tls, client, make_tls, thread_server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _api(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=update)})


def _connect(url: str, tls: Tls) -> ssl.SSLSocket:
    host, port = url.removeprefix("https://").split(":")
    raw = socket.create_connection((host, int(port)), timeout=10)
    return tls.context().wrap_socket(raw, server_hostname=host)


def _read_all(sock: ssl.SSLSocket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_headers_and_bodies_that_do_not_arrive_in_time_are_cut_off(
    mock_settings: Settings, tls: Tls
) -> None:
    settings = _api(mock_settings, header_timeout_s=1.0, body_timeout_s=1.0)
    with thread_server(settings, tls) as url:
        # headers a byte at a time, never finished: the server closes the connection
        with _connect(url, tls) as sock:
            sock.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            started = time.monotonic()
            assert _read_all(sock) == b""
            assert 0.8 < time.monotonic() - started < 8
        # a body announced but not sent: 408, and the connection is not held
        with _connect(url, tls) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"rollback'
            )
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 1 s" in answer
        # a prompt client on the same server is served as always
        with client(url, tls) as c:
            assert c.get("/api/openapi.json").status_code == 200


def _last_client(settings: Settings) -> str:
    lines = settings.path(settings.audit.path).read_text().splitlines()
    return str(json.loads(lines[-1])["extra"]["client"])


def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(
    mock_settings: Settings, tls: Tls
) -> None:
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    with thread_server(mock_settings, tls) as url, client(url, tls) as c:
        c.get("/api/openapi.json", headers=forwarded)
    assert _last_client(mock_settings) == "127.0.0.1"  # anyone could send that header

    settings = _api(mock_settings, trusted_proxies=["127.0.0.1"])
    with thread_server(settings, tls) as url, client(url, tls) as c:
        c.get("/api/openapi.json", headers=forwarded)
    assert _last_client(settings) == "203.0.113.9"


def test_trusting_every_proxy_is_refused_by_name() -> None:
    from bmc_pipeline.config import ApiSettings

    with pytest.raises(ValueError, match=r"'\*' is not an IP address"):
        ApiSettings(trusted_proxies=["*"])
