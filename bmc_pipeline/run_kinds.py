"""What a Dagster run did, however it was launched.

Runs of this project's jobs carry ``bmc/operation`` (and backups ``bmc/backup_type``). A run the
UI launches by materializing assets (Dagster's ad hoc asset job) or by executing a check alone
carries neither: the step tags its own run when it starts (:func:`tag_run`), and a run that has
not got that far is recognised by the assets it selected. The failure sensor and the health
report classify runs here, so a failure alerts and counts wherever it was launched.
"""

from __future__ import annotations

import dagster as dg

OPERATION_TAG = "bmc/operation"
BACKUP_TYPE_TAG = "bmc/backup_type"
CHECKS_ONLY_TAG = "bmc/checks_only"  # a run that re-validated stored backups and wrote none

# the first two parts of an asset key -> (operation, backup type)
_BY_ASSET: dict[tuple[str, ...], tuple[str, str | None]] = {
    ("backups", "full"): ("backup", "full"),
    ("backups", "incremental"): ("backup", "incremental"),
    ("backups", "retention"): ("retention", None),
    ("backups", "drill"): ("drill", None),
    ("backups", "health"): ("health", None),
}


def _selected(run: dg.DagsterRun) -> set[tuple[str, str | None]]:
    keys = set(run.asset_selection or ())
    keys |= {check.asset_key for check in run.asset_check_selection or ()}
    return {_BY_ASSET[k] for k in (tuple(key.path[:2]) for key in keys) if k in _BY_ASSET}


def operation_of(run: dg.DagsterRun) -> str:
    """``backup``, ``restore``, ``scan``, ``retention``, ``drill``, ``health``, ..., or ``""``."""
    tagged = run.tags.get(OPERATION_TAG)
    if tagged:
        return tagged
    operations = {op for op, _ in _selected(run)}
    return operations.pop() if len(operations) == 1 else ""


def backup_type_of(run: dg.DagsterRun) -> str | None:
    """``full`` or ``incremental`` for a backup run (None when it mixed both, or is no backup)."""
    tagged = run.tags.get(BACKUP_TYPE_TAG)
    if tagged:
        return tagged
    types = {t for op, t in _selected(run) if op == "backup"}
    return types.pop() if len(types) == 1 else None


def tag_run(
    context: dg.OpExecutionContext | dg.AssetExecutionContext, tags: dict[str, str]
) -> None:
    """Add ``tags`` the run lacks (a run the UI launched from an asset or a check has none)."""
    missing = {k: v for k, v in tags.items() if k not in context.run.tags}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


def is_checks_only(run: dg.DagsterRun) -> bool:
    """A run that only executed checks: it re-validated, it backed nothing up."""
    return run.tags.get(CHECKS_ONLY_TAG) == "true" or bool(
        run.asset_check_selection and not run.asset_selection
    )
