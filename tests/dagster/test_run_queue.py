"""The run queue on PostgreSQL, under the real daemon: three restores submitted at once (as the UI,
a schedule or a sensor submits them) are queued, dequeued by ``dagster-daemon`` one at a time
(the tag limit ``bmc/operation=restore: 1`` that `bmc-backup setup --postgres-url` writes), and
never overlap."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

pytest.importorskip("dagster_postgres", reason="the postgres extra: pip install -e '.[postgres]'")

from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.launch import run_backup
from bmc_pipeline.run_origin import code_origin, remote_origin
from tests.support import ROOT, write_config
from tests.support.postgres import dagster_home_on, postgres_server


def _submit_restore(settings: Settings, instance: dg.DagsterInstance, backup_id: str) -> str:
    """A dry-run restore submitted to the instance's run coordinator, as the UI submits one."""
    job = build_definitions(settings).resolve_job_def("restore_job")
    config = {"backup_id": backup_id, "collection": "quotes", "dry_run": True}
    run = instance.create_run_for_job(
        job_def=job, run_config={"ops": {"restore_op": {"config": config}}},
        tags=dict(job.run_tags), remote_job_origin=remote_origin(job.name),
        job_code_origin=code_origin(job.name),
    )  # fmt: skip
    instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]  # unused by the queue
    return run.run_id


def test_three_queued_restores_run_one_at_a_time_under_the_daemon(
    mock_settings: Settings, seeded: dict[str, int], tmp_path: Path, monkeypatch: Any
) -> None:
    with postgres_server() as url:
        home = tmp_path / "dagster"
        env = {**dagster_home_on(url, home),
               "BMC_CONFIG": str(write_config(mock_settings, tmp_path / "cfg.json")),
               "BMC_BACKUP_KEY": mock_settings.backup_key or ""}  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = mock_settings.model_copy(update={"dagster_home": str(home)})
        backup_id = run_backup(settings, "full", include_files=False)["backup_id"]
        with dg.DagsterInstance.get() as instance:
            ids = [_submit_restore(settings, instance, backup_id) for _ in range(3)]
            assert {instance.get_run_by_id(i).status for i in ids} == {dg.DagsterRunStatus.QUEUED}
            daemon = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-daemon")), "run",
                 "-w", str(ROOT / "workspace.yaml")],
                cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                stdout=(tmp_path / "daemon.log").open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 240
                while not all(instance.get_run_by_id(i).is_finished for i in ids):
                    assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
                    assert time.monotonic() < deadline, "the queued runs did not finish in 4 min"
                    time.sleep(1)
            finally:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(timeout=60)
                # the code server the daemon started shares its process group and can outlive it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.pid, signal.SIGKILL)
            records = instance.get_run_records(dg.RunsFilter(run_ids=ids))
        assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS] * 3
        spans = sorted((r.start_time, r.end_time) for r in records)
        assert all(s is not None and e is not None for s, e in spans)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"two restores ran at once: {spans}"
        import psycopg2

        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from runs where pipeline_name = 'restore_job'")
            assert cur.fetchone() == (3,)
