"""The restore, from start to end: plan, rollback point, write, verify.

A restore runs in three passes, and writes nothing until the second:

1. **Plan** (read-only, :mod:`.plan`). Resolve the chain (:mod:`.chain`), authenticate every
   archive of it, read the target collection once (ids and content hashes, and its state digest),
   then stream the documents of the point's state through filters, validation and the strategy.
2. **Rollback first, then write** (:mod:`.rollback`, :mod:`.write`). The current version of
   every document the plan changes or deletes, and the ids it inserts, are published as a
   ``rollback`` backup; only then are the batches written. A dry run stops after pass 1.
3. **Verify** (:mod:`.verify`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings, check_collection_name
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.rawbson import decode_id, id_document, id_element
from bmc_pipeline.engine.restore.chain import point_documents, resolve_chain, verify_chain
from bmc_pipeline.engine.restore.filters import RestoreFilters
from bmc_pipeline.engine.restore.legacy import LegacyFile
from bmc_pipeline.engine.restore.plan import PlanFiles, Quarantine, RestorePlanner
from bmc_pipeline.engine.restore.report import RestoreReport
from bmc_pipeline.engine.restore.rollback import publish_rollback
from bmc_pipeline.engine.restore.rollback import rollback as rollback_to
from bmc_pipeline.engine.restore.verify import verify_restore
from bmc_pipeline.engine.restore.write import (
    Log,
    WriteProgress,
    delete_ids,
    in_batches,
    insert,
    quiet,
    read_target,
    replace,
)
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.vocabulary import Strategy


@dataclass
class RestoreOptions:
    """What to restore and how: everything a caller chooses, in one object."""

    backup_id: str = "latest"
    collection: str = "conversations"
    target_collection: str | None = None
    strategy: Strategy = Strategy.skip_duplicates
    filters: RestoreFilters = field(default_factory=RestoreFilters)
    dry_run: bool = False
    fail_fast: bool = False
    # documents of a legacy JSON file (LegacyFile) or a scan report instead of a backup chain
    legacy_documents: Iterable[bytes] | None = None

    def __post_init__(self) -> None:
        try:
            self.strategy = Strategy(self.strategy)
        except ValueError:
            raise BmcError(
                f"unknown strategy {self.strategy!r}: use one of "
                f"{', '.join(s.value for s in Strategy)}"
            ) from None
        check_collection_name(self.collection)
        self.target_collection = check_collection_name(self.target_collection or self.collection)


class RestoreEngine:
    """Restores collections from a :class:`BackupStore` into a database."""

    def __init__(
        self,
        settings: Settings,
        db: Any,
        store: BackupStore,
        keyring: KeyRing,
        *,
        log: Log = quiet,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.keyring = keyring
        self.log = log
        self.batch = settings.restore.batch_size

    def restore(
        self,
        backup_id: str,
        collection: str,
        *,
        target_collection: str | None = None,
        strategy: str | Strategy = Strategy.skip_duplicates,
        filters: RestoreFilters | None = None,
        dry_run: bool = False,
        fail_fast: bool = False,
        legacy_documents: Iterable[bytes] | None = None,
    ) -> RestoreReport:
        """Keyword form of :meth:`run` (the signature callers have always used)."""
        return self.run(
            RestoreOptions(
                backup_id=backup_id,
                collection=collection,
                target_collection=target_collection,
                strategy=strategy,  # type: ignore[arg-type]  # RestoreOptions checks and converts
                filters=filters or RestoreFilters(),
                dry_run=dry_run,
                fail_fast=fail_fast,
                legacy_documents=legacy_documents,
            )
        )

    def run(self, opts: RestoreOptions) -> RestoreReport:
        started = time.monotonic()
        target = str(opts.target_collection)
        filters = opts.filters
        report = RestoreReport(
            opts.backup_id, opts.collection, target, opts.strategy.value, opts.dry_run
        )
        expected: StateDigest | None = None
        legacy = opts.legacy_documents
        if legacy is not None:
            docs, deleted = iter(legacy), set[bytes]()
        else:
            points = resolve_chain(
                self.store, self.keyring, opts.backup_id, opts.collection, filters.point_in_time
            )
            report.backup_id = points[-1].ref.backup_id
            report.chain = [p.ref.backup_id for p in points]
            self.log(
                f"restore of {opts.collection} from {report.backup_id}: "
                f"verifying {len(points)} backup(s)"
            )
            verify_chain(points, self.keyring)
            docs, deleted = point_documents(points, self.keyring)
            report.phase("verify_backup", started)
            expected = points[-1].entry.state.digest_value()
            if not filters.drop_deleted or filters.selective:
                deleted = set()

        coll = self.db[target]
        t = time.monotonic()
        before, before_digest = read_target(coll, self.settings.mongodb.batch_size)
        self.store.mkdir(self.store.root)
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=self.store.root) as tmp:
            plan = PlanFiles(Path(tmp), self.keyring, self.settings)
            quarantine = Quarantine(self.store, target)
            planner = RestorePlanner(
                coll,
                self.settings.collection(opts.collection),
                report,
                plan,
                batch_size=self.batch,
                log=self.log,
            )
            try:
                planner.run(
                    docs, before, filters, quarantine, opts.fail_fast, dedupe=legacy is not None
                )
            finally:
                quarantine.close()
            if isinstance(legacy, LegacyFile):
                report.read += len(legacy.refused)
                report.invalid += len(legacy.refused)
                report.generated_ids = legacy.generated_ids
                report.errors.extend(legacy.refused[: max(0, 100 - len(report.errors))])
            if report.unaccounted():
                raise BmcError(
                    f"restore of {opts.collection}: {report.read} documents read but "
                    f"{report.read - report.unaccounted()} accounted for; nothing was written "
                    "(this is a bug: please report it with the --dry-run --json output)"
                )
            for elem in deleted:
                if elem in before:
                    report.deleted += 1
                    report.sample("delete", elem)
                    plan.add("delete", id_document(elem))
            plan.close()
            # the maps of the plan are no longer needed: free them before the read-back builds its own
            before_count = len(before)
            del before, docs, deleted
            t = report.phase("plan", t)
            if quarantine.path is not None:
                report.quarantine_file = str(quarantine.path)
            if opts.dry_run:
                report.verified = False
                report.verification.append("dry run: nothing was written")
                report.duration_s = time.monotonic() - started
                return report
            report.rollback_id = publish_rollback(
                self.settings, self.store, self.keyring, coll, plan, report, before_digest
            )
            self.log(f"rollback backup {report.rollback_id} published; now writing")
            t = report.phase("rollback_point", t)
            self._write(coll, plan, report)
            t = report.phase("write", t)
            complete = not before_count and not filters.selective and legacy is None
            verify_restore(
                coll,
                plan,
                report,
                before_count=before_count,
                expected=expected if complete else None,
                batch_size=self.settings.mongodb.batch_size,
            )
            report.phase("read_back", t)
        report.duration_s = time.monotonic() - started
        self.log(
            f"restore of {opts.collection} into {target}: {report.restored} restored, "
            f"{report.skipped} skipped, {report.invalid} invalid, verified={report.verified}"
        )
        return report

    def _write(self, coll: Any, plan: PlanFiles, report: RestoreReport) -> None:
        progress = WriteProgress(report.inserted + report.overwritten + report.merged, self.log)
        in_batches(plan.read("insert"), self.batch, lambda d: insert(coll, d), progress)
        in_batches(plan.read("replace"), self.batch, lambda d: replace(coll, d), progress)
        ids = [decode_id(id_element(d)) for d in plan.read("delete")]
        delete_ids(coll, ids, self.batch)

    def rollback(self, rollback_id: str) -> dict[str, Any]:
        """Return a collection to its state before the restore that made ``rollback_id``."""
        return rollback_to(self.settings, self.store, self.keyring, self.db, rollback_id)
