"""The recovery HTTP API, served by uvicorn over HTTPS on a loopback port.

The walk through an incident end to end is in test_incident.py. The security tests here check
401/403/429/413, path traversal and operator injection, each refused and recorded in the audit log.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import AuditLog
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import seed_database, write_files
from tests.support import make_settings
from tests.support.apiserver import Tls, client, make_tls, thread_server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _tokens(settings: Settings) -> dict[str, str]:
    store = TokenStore.for_settings(settings)
    return {
        "admin": store.create("alice", "admin")[0],
        "admin2": store.create("bob", "admin")[0],
        "viewer": store.create("carol", "viewer")[0],
    }


def _audit_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.path(settings.audit.path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _with_limits(settings: Settings, get: str, post: str) -> Settings:
    api = settings.api.model_copy(update={"rate_limit_get": get, "rate_limit_post": post})
    return settings.model_copy(update={"api": api})


# -- security, with the server in this process on mongomock (nothing here needs a real database) --
def test_rate_limits_per_address_and_per_token_with_retry_after(
    mock_settings: Settings, tls: Tls
) -> None:
    settings = _with_limits(mock_settings, "10/15 minutes", "5/15 minutes")
    tokens = _tokens(settings)
    with thread_server(settings, tls) as url:
        with client(url, tls, tokens["admin"]) as c:
            for _ in range(10):
                assert c.get("/api/recovery/backups").status_code == 200
            r = c.get("/api/recovery/backups")
            assert r.status_code == 429
            assert 0 < int(r.headers["retry-after"]) <= 900
            assert r.headers["content-type"] == "application/problem+json"
            # writes have their own budget: 5, whatever they ask
            for _ in range(5):
                assert c.post("/api/recovery/rollback", json={}).status_code == 422
            r = c.post("/api/recovery/rollback", json={})
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # the same token from another address: its own budget is spent
        with client(url, tls, tokens["admin"], source="127.0.0.2") as c:
            r = c.get("/api/recovery/backups")
            assert r.status_code == 429 and "token alice" in r.json()["detail"]
        # another valid token from the first address has its own budget: a token is limited per
        # token, the address budget is for requests without a valid one
        with client(url, tls, tokens["admin2"]) as c:
            assert c.get("/api/recovery/backups").status_code == 200
        # guessing tokens from one address spends that address's budget
        with client(url, tls, "bmc_guess", source="127.0.0.3") as c:
            for _ in range(10):
                assert c.get("/api/recovery/backups").status_code == 401
            r = c.get("/api/recovery/backups")
            assert r.status_code == 429 and "127.0.0.3" in r.json()["detail"]
    lines = _audit_lines(settings)
    refused = [e for e in lines if e["extra"].get("status") == 429]
    assert len(refused) == 3  # the token's refusals, a line each
    # a stranger's refusals are tallied: one line per address, written at the latest at shutdown
    tallies = [e for e in lines if e["action"] == "refused requests"]
    assert [(t["extra"]["client"], t["extra"]["count"]) for t in tallies] == [("127.0.0.3", 1)]
    assert tallies[0]["params"]["paths"] == {"/api/recovery/backups": 1}


def test_anonymous_traffic_does_not_lock_out_an_admin_on_the_same_address(
    mock_settings: Settings, tls: Tls
) -> None:
    """Behind a reverse proxy every client shares one address."""
    settings = _with_limits(mock_settings, "10/15 minutes", "5/15 minutes")
    tokens = _tokens(settings)
    with thread_server(settings, tls) as url:
        with client(url, tls) as anonymous:
            for _ in range(12):
                anonymous.get("/api/recovery/backups")
            assert anonymous.get("/api/recovery/backups").status_code == 429
        with client(url, tls, tokens["admin"]) as admin:
            assert admin.get("/api/recovery/backups").status_code == 200


def _raw(url: str, tls: Tls, method: str, path: str, token: str, body: bytes = b"") -> int:
    """Send ``path`` byte for byte (an HTTP client library would normalize ``..`` away)."""
    host, port = url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=tls.context(), timeout=60)
    try:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status >= 400:
            assert resp.getheader("content-type") == "application/problem+json", payload
            assert b"/tmp" not in payload and b"/work" not in payload, payload
        return resp.status
    finally:
        conn.close()


TRAVERSALS = [
    ("GET", "/api/recovery/validate/../../etc/passwd"),
    ("GET", "/api/recovery/validate/..%2F..%2Fetc%2Fpasswd"),
    ("GET", "/api/recovery/validate/%2e%2e%2f%2e%2e%2fbackup_config.json"),
    ("GET", "/api/recovery/validate/%2Fetc%2Fpasswd"),
    ("GET", "/api/recovery/validate/.."),
    ("DELETE", "/api/recovery/backups/..%2F..%2Fbackups?confirm=..%2F..%2Fbackups"),
    ("GET", "/api/recovery/scan?collection=..%2F..%2Fetc"),
    ("POST", "/api/recovery/backup?collection=../conversations"),
]


def test_path_traversal_and_operator_injection_are_refused_and_audited(
    mock_settings: Settings, tls: Tls
) -> None:
    settings = _with_limits(mock_settings, "1000/minute", "1000/minute")
    token = _tokens(settings)["admin"]
    with thread_server(settings, tls) as url:
        for method, path in TRAVERSALS:
            assert _raw(url, tls, method, path, token) in (404, 422), path
        bodies: list[dict[str, Any]] = [
            {"backup_file": "../../etc/passwd", "target_collection": "conversations"},
            {"backup_file": "/etc/passwd", "target_collection": "conversations"},
            {"backup_file": "latest", "target_collection": "../../x"},
            {"backup_file": "latest", "target_collection": "system.users"},
            {"target_collection": "c", "filters": {"query": {"$where": "sleep(100)"}}},
            {"target_collection": "c", "filters": {"query": {"$expr": {"$eq": [1, 1]}}}},
            {
                "target_collection": "c",
                "filters": {"query": {"m": {"$elemMatch": {"$function": {"body": "x"}}}}},
            },
            {
                "target_collection": "c",
                "filters": {"query": {"$or": [{"a": 1}, {"$accumulator": {}}]}},
            },
        ]
        for b in bodies:
            status = _raw(url, tls, "POST", "/api/recovery/restore", token, json.dumps(b).encode())
            assert status == 422, b
        with client(url, tls, token) as c:
            r = c.post(
                "/api/recovery/restore",
                json={"target_collection": "c", "filters": {"query": {"$where": "1"}}},
            )
            msg = r.json()["errors"][0]["msg"]
            assert "'$where'" in msg and "allowed" in msg
            # a body over the limit is refused before it is parsed
            big = {"target_collection": "c", "filters": {"session_ids": ["x" * 100] * 1000}}
            assert c.post("/api/recovery/restore", json=big).status_code == 413
    lines = [e for e in _audit_lines(settings) if e["via"] == "api"]
    traversal = [e for e in lines if "path traversal" in e["extra"].get("suspicious", [])]
    injection = [e for e in lines if "operator injection" in e["extra"].get("suspicious", [])]
    assert len(traversal) >= len(TRAVERSALS) + 3
    assert len(injection) == 5
    assert all(e["outcome"] == "refused" for e in traversal + injection)
    assert all(e["actor"] == "token:alice" for e in traversal + injection)


def test_plain_http_is_refused_off_loopback_and_tls_files_are_checked(
    mock_settings: Settings, tls: Tls, tmp_path: Path
) -> None:
    from bmc_pipeline.api.serve import build_server
    from bmc_pipeline.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"refusing to serve plain HTTP on 0\.0\.0\.0"):
        build_server(mock_settings, host="0.0.0.0", port=1)
    build_server(mock_settings, host="0.0.0.0", port=1, allow_plain_http=True)
    build_server(mock_settings, host="127.0.0.1", port=1)
    build_server(mock_settings, host="0.0.0.0", port=1, cert=str(tls.cert), key=str(tls.key))
    with pytest.raises(ConfigError, match="both a certificate and its private key"):
        build_server(mock_settings, host="0.0.0.0", port=1, cert=str(tls.cert))
    open_key = tmp_path / "open.key"
    open_key.write_bytes(tls.key.read_bytes())
    open_key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        build_server(mock_settings, port=1, cert=str(tls.cert), key=str(open_key))


@pytest.fixture
def served(mock_settings: Settings, tls: Tls) -> Iterator[tuple[str, str]]:
    settings = _with_limits(mock_settings, "1000/minute", "1000/minute")
    token = _tokens(settings)["admin"]
    with thread_server(settings, tls) as url:
        yield url, token


def test_errors_are_problem_documents_without_server_paths(
    served: tuple[str, str], tls: Tls
) -> None:
    url, token = served
    with client(url, tls, token) as c:
        r = c.get("/api/recovery/validate/20200101T000000Z-full-abcdef")
        assert r.status_code == 404
        doc = r.json()
        assert doc["status"] == 404 and doc["title"] == "Not Found"
        assert "20200101T000000Z-full-abcdef" in doc["detail"]
        assert "/" not in doc["detail"].replace("'bmc-backup list'", "")
        r = c.get("/api/recovery/backups", params={"limit": 0})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "limit"]
        assert "input" not in json.dumps(r.json()["errors"])
        r = c.get("/api/nothing-here")
        assert r.status_code == 404 and r.headers["x-content-type-options"] == "nosniff"


# -- the OpenAPI document, checked by property-based tests against the served API ------------------
@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[Any]:
    """A served API on mongomock with data and one backup, and its schema as schemathesis reads it."""
    import schemathesis

    from bmc_pipeline.launch import run_backup

    tmp = tmp_path_factory.mktemp("schema")
    key = Key(b"k" * 32)
    settings = _with_limits(
        make_settings(tmp, "mongomock://schema", "bmc", key), "100000/minute", "100000/minute"
    )
    seed_database(connect("mongomock://schema")["bmc"], conversations=20, seed=5)
    write_files(settings.files_root, seed=5)
    token = _tokens(settings)["admin"]
    with pytest.MonkeyPatch.context() as mp:
        # in-process Dagster runs read the key from the environment, as in a deployment
        mp.setenv("BMC_BACKUP_KEY", base64.b64encode(key.material).decode())
        run_backup(settings, "full", include_files=False)
        with thread_server(settings, tls) as url:
            schema = schemathesis.openapi.from_url(f"{url}/api/openapi.json", verify=str(tls.ca))
            yield schema, token, settings
    assert AuditLog(settings.path(settings.audit.path), KeyRing([key])).verify().ok


OPERATIONS = [
    ("GET", "/api/recovery/scan"),
    ("POST", "/api/recovery/backup"),
    ("POST", "/api/recovery/restore"),
    ("POST", "/api/recovery/rollback"),
    ("POST", "/api/recovery/drill"),
    ("GET", "/api/recovery/backups"),
    ("DELETE", "/api/recovery/backups/{backup_id}"),
    ("GET", "/api/recovery/validate/{backup_id}"),
    ("GET", "/api/recovery/status"),
    ("GET", "/api/recovery/runs/{run_id}"),
]


def test_every_endpoint_is_in_the_openapi_document(schema_server: Any) -> None:
    schema = schema_server[0]
    served = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_matches_its_openapi_document(
    schema_server: Any, tls: Tls, method: str, path: str
) -> None:
    """Generated requests (valid and not) never get a 5xx or a response the schema does not allow.

    Schemathesis's own pytest loader does not run under this pytest, so each operation's
    strategy drives a plain Hypothesis test; the checks are schemathesis's (all of them).
    """
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    schema, token, _ = schema_server
    operation = next(
        op.ok()
        for op in schema.get_all_operations()
        if (op.ok().method.upper(), op.ok().path) == (method, path)
    )
    examples = 6 if path.endswith("/backup") else 25

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"},
            verify=str(tls.ca),
            # a confirmation that must equal the path's id is a rule no schema can state, so a
            # schema-valid DELETE may rightly get 400; every other operation takes this check
            excluded_checks=[positive_data_acceptance] if method == "DELETE" else None,
        )

    check()


def test_a_second_backup_while_one_runs_is_refused_with_409(
    served: tuple[str, str], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from bmc_pipeline.api.routes import backups
    from bmc_pipeline.engine.errors import BmcError

    started, release = threading.Event(), threading.Event()

    def slow_backup(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started.set()
        assert release.wait(30)
        raise BmcError("stopped by the test")

    monkeypatch.setattr(backups, "run_backup", slow_backup)
    url, token = served
    first: dict[str, int] = {}

    def call() -> None:
        with client(url, tls, token) as c:
            first["status"] = c.post("/api/recovery/backup").status_code

    t = threading.Thread(target=call)
    t.start()
    try:
        assert started.wait(30)
        with client(url, tls, token) as c:
            r = c.post("/api/recovery/backup")
            assert r.status_code == 409 and "already running" in r.json()["detail"]
    finally:
        release.set()
        t.join(30)
    assert first["status"] == 400  # the first one ran (and failed as the test made it)


def test_a_broken_session_id_in_a_scan_report_does_not_break_the_response() -> None:
    """A lone surrogate cannot be UTF-8: the response shows it as text instead of failing."""
    from bmc_pipeline.api.problems import jsonable as _jsonable

    shown = _jsonable({"recoverable": [{"key": "session_id:\ud800", "note": "añadido"}]})
    assert shown == {"recoverable": [{"key": "session_id:\\ud800", "note": "añadido"}]}
    assert json.dumps(shown, ensure_ascii=False).encode("utf-8")


def test_the_access_log_never_shows_a_query_string(
    mock_settings: Settings, tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    """A token sent where it does not belong is refused, and not written to the log either."""
    import logging

    access = logging.getLogger("uvicorn.access")  # uvicorn's own handlers; it does not propagate
    with thread_server(mock_settings, tls, log_level="info") as url, client(url, tls) as c:
        access.addHandler(caplog.handler)
        try:
            r = c.get("/api/recovery/backups", params={"token": "bmc_secret-in-the-url"})
            assert r.status_code == 401
        finally:
            access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/api/recovery/backups" in line for line in lines), lines
    assert not any("secret-in-the-url" in line or "?" in line for line in lines), lines
