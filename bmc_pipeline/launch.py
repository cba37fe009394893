"""Run the Dagster jobs from the command line, in this process, against the local instance.

Runs launched here are recorded in the instance at ``DAGSTER_HOME`` (by default ``.bmc/dagster``
next to ``backup_config.json``), so they appear in the Dagster UI's run history beside scheduled
ones, with the same metadata and checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from bmc_pipeline.assets.backups import backup_set_key, collection_key, files_key, partitions
from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError, RunFailedError, UnknownCollectionError, error_class
from bmc_pipeline.jobs.backup import BACKUP_JOB_NAMES
from bmc_pipeline.jobs.history import dagster_home
from bmc_pipeline.jobs.maintenance import HEALTH_JOB
from bmc_pipeline.progress import Log, shown_on
from bmc_pipeline.run_origin import REPOSITORY_LABEL, REPOSITORY_LABEL_TAG, runs_with_origin


def current_partition(settings: Settings, backup_type: str) -> str:
    """The partition that holds 'now': the current day, or the current incremental window."""
    key = partitions(settings, backup_type).get_last_partition_key()
    if key is None:
        raise BmcError("no partition covers the current time; check the system clock")
    return key


def _step_errors(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(exception class name, message) of every failed step, innermost cause first."""
    out = []
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data and ev.step_failure_data.error:
            err = ev.step_failure_data.error
            while err.cause is not None and "Error occurred while executing" in err.message:
                err = err.cause
            out.append((err.cls_name or "", err.message.strip()))
    return out


def _without_class(cls_name: str, message: str) -> str:
    """``pkg.module.SomeError: text`` -> ``text`` (the class is known from the error raised)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and cls_name and head.split(".")[-1] == cls_name else message


def _failure_report(result: dg.ExecuteInProcessResult) -> dict[str, Any] | None:
    """The report a step attached to its ``dg.Failure`` (a restore that wrote but did not verify
    fails its run, so it alerts, yet its caller still prints what was written)."""
    for ev in result.all_events:
        data = ev.step_failure_data if ev.is_step_failure else None
        if data is not None and data.user_failure_data is not None:
            value = data.user_failure_data.metadata.get("report")
            if isinstance(value, dg.JsonMetadataValue) and isinstance(value.data, dict):
                return value.data
    return None


def _raise_run_failure(what: str, result: dg.ExecuteInProcessResult) -> None:
    """Raise the engine error a failed run's step raised, so callers can tell kinds apart.

    The run crosses Dagster's process boundary as text; the class name tells which of our
    errors it was (a missing backup is not a corrupt one), and its message is kept whole.
    """
    errors = _step_errors(result)
    if not errors:
        raise BmcError(f"{what} failed (run {result.run_id}); see its logs in the Dagster UI")
    cls_name, _ = errors[0]
    cls = RunFailedError if cls_name == "Failure" else error_class(cls_name)
    text = "; ".join(_without_class(c, m) for c, m in errors)
    exc = cls(f"{what} failed (run {result.run_id}): {text}")
    exc.run_id, exc.report = result.run_id, _failure_report(result)
    raise exc


def _execute(
    settings: Settings,
    job_name: str,
    what: str,
    *,
    launched_by: str,
    run_config: dict[str, Any] | None = None,
    echo: Log | None = None,
    **options: Any,
) -> dg.ExecuteInProcessResult:
    """Run a job in this process against the local instance; a failed run raises its error.

    The run's whole log is kept in the Dagster instance either way. On the command line the
    console shows none of it: the command prints the step's error itself, in one line with the
    run id, where Dagster's console logger would print its stack trace first. Elsewhere (the API's
    server log) warnings and errors are shown. ``echo`` is where the steps' progress lines also go
    (the command's ``... message`` lines on stderr), see :func:`progress.run_log`.
    """
    dagster_home(settings)
    console = "CRITICAL" if launched_by.startswith("cli") else "WARNING"
    with (
        dg.DagsterInstance.get() as instance,
        shown_on(echo),
        runs_with_origin(instance, job_name),
    ):
        # built inside the instance's context, which is where Dagster looks for its state storage
        job = build_definitions(settings).resolve_job_def(job_name)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={
                **(run_config or {}),
                "loggers": {"console": {"config": {"log_level": console}}},
            },
            tags={"bmc/launched_by": launched_by, REPOSITORY_LABEL_TAG: REPOSITORY_LABEL},
            **options,
        )
    if not result.success:
        _raise_run_failure(what, result)
    return result


@dataclass(frozen=True)
class OpRun:
    """A finished one-op run: what the op returned (its report) and the run's id."""

    output: dict[str, Any]
    run_id: str
    succeeded: bool = True


def _reported_failure(exc: RunFailedError) -> OpRun:
    """A failed run whose step attached its report, as that report (not succeeded); any other
    failure is raised again."""
    if exc.report is None or exc.run_id is None:
        raise exc
    return OpRun(exc.report, exc.run_id, succeeded=False)


def run_op_job(
    settings: Settings,
    job_name: str,
    op_name: str,
    op_config: dict[str, Any],
    *,
    launched_by: str,
    run_id: str | None = None,
    echo: Log | None = None,
    failed_report: bool = False,
) -> OpRun:
    """Run a one-op job (restore, rollback, scan) in this process; a failed run raises.

    ``run_id`` names the run in advance (a run answered with 202 before it ends). With
    ``failed_report``, a run that failed with a report attached (a restore that wrote but did not
    verify) returns it, marked not succeeded, instead of raising: the command prints it.
    """
    try:
        result = _execute(
            settings,
            job_name,
            job_name.replace("_job", ""),
            launched_by=launched_by,
            run_config={"ops": {op_name: {"config": op_config}}},
            echo=echo,
            run_id=run_id,
        )
    except RunFailedError as exc:
        if failed_report:
            return _reported_failure(exc)
        raise
    output = result.output_for_node(op_name)
    assert isinstance(output, dict)
    return OpRun(output, result.run_id)


def run_report_asset(
    settings: Settings,
    job_name: str,
    what: str,
    *,
    launched_by: str,
    echo: Log | None = None,
    run_id: str | None = None,
) -> OpRun:
    """Materialize a job's one asset whose metadata holds a ``report`` (the drill); a run that
    failed with its report attached returns it, marked not succeeded."""
    try:
        result = _execute(
            settings, job_name, what, launched_by=launched_by, echo=echo, run_id=run_id
        )
    except RunFailedError as exc:
        return _reported_failure(exc)
    (event,) = result.get_asset_materialization_events()
    report = event.materialization.metadata["report"]
    assert isinstance(report, dg.JsonMetadataValue) and isinstance(report.data, dict)
    return OpRun(report.data, result.run_id)


def configured_collections(settings: Settings, names: list[str] | None) -> list[str]:
    """``names`` (None: every configured collection), refused if one is not configured."""
    unknown = [c for c in names or [] if c not in settings.collections]
    if unknown:
        raise UnknownCollectionError(
            f"collection(s) {', '.join(unknown)} are not in backup_config.json "
            f"(configured: {', '.join(settings.collections)}); add them under 'collections'"
        )
    return list(names or settings.collections)


def run_backup(
    settings: Settings,
    backup_type: str,
    collections: list[str] | None = None,
    *,
    include_files: bool = True,
    partition_key: str | None = None,
    launched_by: str = "cli",
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run the full or incremental backup job; returns the backup's summary.

    ``run_id`` names the run in advance (a backup answered with 202 before it ends)."""
    if backup_type not in BACKUP_JOB_NAMES:
        raise BmcError(f"unknown backup type {backup_type!r}: use 'full' or 'incremental'")
    # no key, no backup: say so before a run starts, rather than through a failed step's trace
    Deployment(settings).keyring()
    names = configured_collections(settings, collections)
    selection = [collection_key(backup_type, c) for c in names] + [backup_set_key(backup_type)]
    if include_files:
        selection.append(files_key(backup_type))
    result = _execute(
        settings,
        BACKUP_JOB_NAMES[backup_type],
        f"{backup_type} backup",
        launched_by=launched_by,
        partition_key=partition_key or current_partition(settings, backup_type),
        asset_selection=selection,
        run_id=run_id,
    )
    for mat in result.asset_materializations_for_node(f"{backup_type}_backup"):
        if mat.asset_key == backup_set_key(backup_type):
            summary = mat.metadata["summary"].value
            assert isinstance(summary, dict)
            return {**summary, "run_id": result.run_id}
    raise BmcError("the backup run finished without publishing a backup set")


def run_health(settings: Settings, *, launched_by: str = "cli") -> dict[str, Any]:
    """Materialize ``backups/health`` now; returns its metadata's plain values."""
    result = _execute(settings, HEALTH_JOB, "health report", launched_by=launched_by)
    (event,) = result.get_asset_materialization_events()
    out: dict[str, Any] = {}
    for k, v in event.materialization.metadata.items():
        if isinstance(v, dg.TableMetadataValue):
            out[k] = [r.data for r in v.records]  # a table: its rows
        else:
            out[k] = getattr(v, "value", v)
    return out
