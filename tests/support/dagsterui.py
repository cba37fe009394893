"""``dagster dev`` on a free loopback port, for the browser test of the UI; stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bmc_pipeline.devdb import free_port
from tests.support import ROOT


@contextmanager
def dagster_dev(env: dict[str, str], log: Path, *, timeout_s: float = 180) -> Iterator[str]:
    """Start the webserver, daemon and code server of ``workspace.yaml``; yield the UI's URL."""
    port = free_port()
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p",
           str(port)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({proc.returncode}); see {log}")
            try:
                # an http:// URL on loopback, built here
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dagster dev did not answer in {timeout_s:.0f} s; see {log}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
