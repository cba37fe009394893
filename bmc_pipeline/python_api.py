"""The Python API the original specification asks for: ``restore_from_backup(...)``.

Its signature is fixed by that specification; it reads the settings, key and database from
``backup_config.json`` and the environment like the command line does, and is recorded in the
audit log like a command (``via: python``).
"""

from __future__ import annotations

from typing import Any

from bmc_pipeline.config import load_settings
from bmc_pipeline.engine.audit import audit_log_for, current_user
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters, resolve_source


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
    d = Deployment(load_settings())
    store = d.store()
    source = str((filters or {}).get("collection") or target_collection)
    f = RestoreFilters.from_dict({k: v for k, v in (filters or {}).items() if k != "collection"})
    engine = RestoreEngine(d.settings, d.database(), store, d.keyring())
    params = {"backup_file": backup_file, "target_collection": target_collection,
              "strategy": strategy, "dry_run": dry_run, "filters": filters or {}}  # fmt: skip
    # recorded like a command: who, what, the outcome; refused if the log cannot record it
    with audit_log_for(d.settings, d.keyring()).operation(
        actor=current_user(), via="python", action="restore_from_backup", params=params,
        changes=not dry_run,
    ) as info:  # fmt: skip
        backup_id, legacy = resolve_source(store, backup_file, source)
        report = engine.restore(
            backup_id, source, target_collection=target_collection, strategy=strategy,
            filters=f, dry_run=dry_run, legacy_documents=legacy,
        ).as_dict()  # fmt: skip
        info["extra"] = {"backup_id": report["backup_id"], "restored": report["restored"],
                         "verified": report["verified"], "rollback_id": report["rollback_id"]}  # fmt: skip
        if not dry_run and not report["verified"]:
            info["outcome"] = "unverified"
    return report


__all__ = ["restore_from_backup"]
