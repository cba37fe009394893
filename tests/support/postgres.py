"""A throwaway PostgreSQL server for the tests of Dagster on PostgreSQL.

Debian's ``postgresql`` server binaries, ``initdb`` into a temporary directory (as the
``postgres`` user when the tests run as root: ``initdb`` refuses root), on a free loopback port,
stopped and removed afterwards. Skipped, saying why, where no server binaries are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bmc_pipeline.devdb import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server; yields the URL of its ``postgres`` database (user ``postgres``, trust)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries here (Debian's postgresql package)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: initdb refuses root")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="bmc-pg-"))
    if as_user:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def dagster_home_on(url: str, home: Path) -> dict[str, str]:
    """``home`` as the Dagster instance `bmc-backup setup --postgres-url` writes (storage in the
    server at ``url``, the run queue); returns the environment its processes need."""
    from bmc_pipeline.cli.setup import PG_ENV, SetupOptions, _instance_config, dagster_pg_url

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(_instance_config(SetupOptions(postgres_url=url)))
    # the URL as setup writes it into service.env, and the instance's home
    return {PG_ENV: dagster_pg_url(url), "DAGSTER_HOME": str(home)}
