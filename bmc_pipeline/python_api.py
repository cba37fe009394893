"""The Python API the original specification asks for: ``restore_from_backup(...)``.

Its signature is fixed by that specification; it reads the settings, key and database from
``backup_config.json`` and the environment like the command line does, and is recorded in the
audit log like a command (``via: python``) and runs as ``restore_job`` in the Dagster instance
(tagged ``bmc/launched_by: python:<user>``), so it is in the run history like every restore.
"""

from __future__ import annotations

from typing import Any

from bmc_pipeline.config import load_settings
from bmc_pipeline.engine.audit import audit_log_for, current_user
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.restore import RestoreFilters
from bmc_pipeline.engine.restore.engine import as_strategy
from bmc_pipeline.launch import run_op_job


def restore_from_backup(
    backup_file: str,
    target_collection: str,
    strategy: str = "skip_duplicates",
    dry_run: bool = False,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore ``target_collection`` from a backup id, manifest path or JSON file.

    ``filters`` may hold ``date_range`` ({"from", "to"}), ``session_ids``, ``point_in_time``,
    ``drop_deleted`` and ``collection`` (the source collection, when it differs from the target).
    """
    settings = load_settings()
    keyring = Deployment(settings).keyring()  # no key, no run: said plainly, before it starts
    source = str((filters or {}).get("collection") or target_collection)
    f = RestoreFilters.from_dict({k: v for k, v in (filters or {}).items() if k != "collection"})
    params = {"backup_file": backup_file, "target_collection": target_collection,
              "strategy": strategy, "dry_run": dry_run, "filters": filters or {}}  # fmt: skip
    config = {"backup_id": backup_file, "collection": source,
              "target_collection": target_collection, "strategy": as_strategy(strategy).value,
              "dry_run": dry_run, **f.as_config()}  # fmt: skip
    user = current_user()
    # recorded like a command (who, what, the outcome; refused if the log cannot record it),
    # and run as restore_job, so it is in the Dagster run history and a failure alerts
    with audit_log_for(settings, keyring).operation(
        actor=user, via="python", action="restore_from_backup", params=params,
        changes=not dry_run,
    ) as info:  # fmt: skip
        run = run_op_job(
            settings, "restore_job", "restore_op", config, launched_by=f"python:{user}",
            failed_report=True,
        )  # fmt: skip
        report = run.output
        info["extra"] = {"backup_id": report["backup_id"], "restored": report["restored"],
                         "verified": report["verified"], "rollback_id": report["rollback_id"],
                         "run_id": run.run_id}  # fmt: skip
        if not dry_run and not report["verified"]:
            info["outcome"] = "unverified"
    return report


__all__ = ["restore_from_backup"]
