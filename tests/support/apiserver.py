"""Running the recovery API for tests: a throwaway CA, and the server in a thread or a process.

Both run real uvicorn over HTTPS on a free loopback port. The thread form shares the test's
process (so ``mongomock://`` data is visible to it); the process form is ``bmc-backup api serve``
exactly as a user starts it.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trustme

from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import free_port


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1 and localhost, written as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server.cert_chain_pems[1:]:
        with cert.open("ab") as f:
            f.write(extra.bytes())
    server.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    ca.cert_pem.write_to_path(str(ca_pem))
    return Tls(cert, key, ca_pem)


def wait_until_serving(url: str, tls: Tls, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/api/openapi.json", verify=tls.context(), timeout=2.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API at {url} did not answer within {timeout} s") from None
            time.sleep(0.1)


@contextmanager
def thread_server(settings: Settings, tls: Tls, *, log_level: str = "warning") -> Iterator[str]:
    """The API in a thread of this process; yields its base URL."""
    from bmc_pipeline.api.serve import build_server

    server, url = build_server(
        settings,
        host="127.0.0.1",
        port=free_port(),
        cert=str(tls.cert),
        key=str(tls.key),
        log_level=log_level,
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_serving(url, tls)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def process_server(config: Path, tls: Tls, env: dict[str, str]) -> Iterator[str]:
    """``bmc-backup api serve`` in its own process; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bmc_pipeline.cli",
        "--config",
        str(config),
        "api",
        "serve",
        "--port",
        str(port),
        "--cert",
        str(tls.cert),
        "--key",
        str(tls.key),
    ]
    log = config.with_name("api-server.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(url, tls)
        except TimeoutError:
            raise TimeoutError(log.read_text(errors="replace")) from None
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point a server elsewhere."""
    drop = ("MONGODB_URI", "DAGSTER_HOME", "BMC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def client(
    url: str, tls: Tls, token: str | None = None, *, source: str | None = None
) -> httpx.Client:
    """An HTTPS client that trusts the test CA; ``source`` binds another loopback address."""
    transport = httpx.HTTPTransport(verify=tls.context(), local_address=source)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, transport=transport, headers=headers, timeout=300.0)
