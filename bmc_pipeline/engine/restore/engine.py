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

import contextlib
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings, check_collection_name
from bmc_pipeline.engine.capture.coverage import restore_source, summed
from bmc_pipeline.engine.chain import (
    collections_at,
    point_documents,
    verify_chain,
)
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import StateDigest
from bmc_pipeline.engine.errors import BmcError, PartialRestoreError
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.locks import restoring
from bmc_pipeline.engine.quarantine import Quarantine
from bmc_pipeline.engine.rawbson import decode_id, id_document, id_element
from bmc_pipeline.engine.restore import after
from bmc_pipeline.engine.restore.files import FilesPlan, FilesRestoreReport, files_point
from bmc_pipeline.engine.restore.filters import RestoreFilters
from bmc_pipeline.engine.restore.indexes import (
    CollectionShape,
    compare_indexes,
    create_indexes,
    ensure_collection,
)
from bmc_pipeline.engine.restore.legacy import LegacyFile
from bmc_pipeline.engine.restore.plan import PlanFiles, RestorePlanner
from bmc_pipeline.engine.restore.report import PointRestoreReport, RestoreReport
from bmc_pipeline.engine.restore.rollback import CollectionChange, publish_rollback
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
from bmc_pipeline.engine.spillmap import SpillMap
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
    indexes: bool = True  # recreate and check the recorded options and indexes (--no-indexes)
    # a restore that stops while writing is undone from its rollback point (--no-auto-rollback)
    auto_rollback: bool = True

    def __post_init__(self) -> None:
        self.strategy = as_strategy(self.strategy)
        check_collection_name(self.collection)
        self.target_collection = check_collection_name(self.target_collection or self.collection)


def as_strategy(value: str | Strategy) -> Strategy:
    """A strategy by name, or a refusal that lists the names there are."""
    try:
        return Strategy(value)
    except ValueError:
        raise BmcError(
            f"unknown strategy {value!r}: use one of {', '.join(s.value for s in Strategy)}"
        ) from None


@dataclass
class FilesRequest:
    """Which backed-up files to restore, and where."""

    backup_id: str
    target: Path
    patterns: list[str] = field(default_factory=list)
    point_in_time: datetime | None = None
    dry_run: bool = False


@dataclass
class _Planned:
    """One collection after pass 1: its plan, what the target held, and what to check after."""

    opts: RestoreOptions
    report: RestoreReport
    coll: Any
    plan: PlanFiles
    before: StateDigest
    before_count: int
    expected: StateDigest | None  # the backup's digest, when the restore is complete into empty
    shape: CollectionShape | None  # recorded options and indexes, unless --no-indexes
    # the collection as its verification read it back (id -> hash, on disk past a size): what
    # the restore left of every document it touched is recorded from it (see .after)
    read_back: SpillMap | None = None


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
                strategy=as_strategy(strategy),
                filters=filters or RestoreFilters(),
                dry_run=dry_run,
                fail_fast=fail_fast,
                legacy_documents=legacy_documents,
            )
        )

    def restore_point(
        self,
        backup_id: str,
        collections: list[str] | None = None,
        *,
        files_to: Path | None = None,
        strategy: str | Strategy = Strategy.skip_duplicates,
        filters: RestoreFilters | None = None,
        dry_run: bool = False,
        fail_fast: bool = False,
        indexes: bool = True,
        rollback_point: bool = True,
        auto_rollback: bool = True,
    ) -> PointRestoreReport:
        """Restore ``collections`` (None or empty: every one the point holds) and, with
        ``files_to``, the files into that directory, all at one point under one rollback point."""
        filters = filters or RestoreFilters()
        names = collections or collections_at(
            self.store, self.keyring, backup_id, filters.point_in_time
        )
        many = [
            RestoreOptions(
                backup_id=backup_id, collection=n, strategy=as_strategy(strategy),
                filters=filters, dry_run=dry_run, fail_fast=fail_fast, indexes=indexes,
                auto_rollback=auto_rollback,
            )
            for n in names
        ]  # fmt: skip
        request = None
        if files_to is not None:
            request = FilesRequest(backup_id, files_to, [], filters.point_in_time, dry_run)
        return self.run_point(many, request, rollback_point=rollback_point)

    def restore_files(
        self,
        backup_id: str,
        target: Path,
        patterns: list[str] | None = None,
        *,
        dry_run: bool = False,
    ) -> FilesRestoreReport:
        """Restore the files of a backup point into ``target`` (see :mod:`.files`)."""
        request = FilesRequest(backup_id, target, list(patterns or []), None, dry_run)
        files = self.run_point([], request).files
        assert files is not None
        return files

    def run(self, opts: RestoreOptions) -> RestoreReport:
        """Restore one collection; its report carries the rollback point's id."""
        (report,) = self.run_point([opts]).collections.values()
        return report

    def run_point(
        self,
        many: list[RestoreOptions],
        files: FilesRequest | None = None,
        *,
        rollback_point: bool = True,
    ) -> PointRestoreReport:
        """Restore several collections (and the files) at one point, under one rollback point.

        Every collection is planned (and the files checked) before anything is written; then one
        rollback point covering all of it is published; then each is written and verified.
        """
        started = time.monotonic()
        dry_run = any(o.dry_run for o in many) or bool(files and files.dry_run)
        self.store.mkdir(self.store.root)
        with contextlib.ExitStack() as temp:
            if not dry_run:  # from the plan to the read-back, nobody else restores these targets
                targets = [f"{self.db.name}.{o.target_collection}" for o in many]
                if files:
                    targets.append(f"files:{files.target.resolve()}")
                temp.enter_context(restoring(self.store.lock_root(), targets, "a restore"))
            planned = []
            for opts in many:
                tmp = temp.enter_context(
                    tempfile.TemporaryDirectory(prefix=".restore-", dir=self.store.root)
                )
                planned.append(self._plan(opts, Path(tmp)))
            files_plan = self._plan_files(files) if files else None
            point = PointRestoreReport(
                backup_id=planned[0].report.backup_id
                if planned
                else str(files and files.backup_id),
                dry_run=dry_run,
                collections={p.report.target_collection: p.report for p in planned},
                files=files_plan.report if files_plan else None,
            )
            if dry_run:
                for p in planned:
                    p.report.verification.append("dry run: nothing was written")
                    p.report.duration_s = sum(p.report.phases_s.values())
                if files_plan:
                    files_plan.report.verification.append("dry run: nothing was written")
                point.duration_s = time.monotonic() - started
                return point
            t = time.monotonic()
            rid = None
            if rollback_point:  # a drill into a scratch database has nothing to undo
                rid = publish_rollback(
                    self.settings, self.store, self.keyring,
                    [CollectionChange(p.coll, p.plan, p.report, p.before) for p in planned],
                    restore_of=point.backup_id,
                    files=files_plan.save_current() if files_plan else None,
                )  # fmt: skip
                self.log(f"rollback backup {rid} published; now writing")
            point.rollback_id = rid
            saved_s = time.monotonic() - t  # one rollback point for all: each report shows it
            try:
                for p in planned:
                    p.report.rollback_id = rid
                    if rid is not None:
                        p.report.phases_s["rollback_point"] = saved_s
                    self._apply(p)
                if files_plan:
                    files_plan.report.rollback_id = rid
                    files_plan.apply()
            except Exception as exc:
                if rid is None:
                    raise
                self._after_failed_write(rid, exc, auto=all(o.auto_rollback for o in many))
            if rid is not None:
                self._record_after(rid, planned)
        point.duration_s = time.monotonic() - started
        return point

    def _record_after(self, rid: str, planned: list[_Planned]) -> None:
        """What the restore left, for the rollback's check that nobody changed it since."""
        t = time.monotonic()
        state = {
            p.report.target_collection: after.left(p.read_back, after.touched(p.plan))
            for p in planned
            if p.read_back is not None
        }
        after.record(self.settings, self.keyring, self.store.ref(rid).payload_dir, rid, state)
        for p in planned:
            p.report.phases_s["record_after"] = time.monotonic() - t
            if p.read_back is not None:
                p.read_back.close()

    def _after_failed_write(self, rid: str, exc: Exception, *, auto: bool) -> None:
        """A write failed half-way: undo it from the rollback point, or say how to; always raises."""
        undone = False
        if auto:
            self.log(f"the restore stopped while writing ({exc}); rolling back from {rid}")
            try:  # this process holds the targets' locks already
                undone = bool(self.rollback(rid, lock=False, force=True)["verified"])
            except Exception as again:  # the database may be what failed: say so, keep the id
                self.log(f"the automatic rollback failed too: {again}")
        if undone:
            said = (
                f"it was rolled back from {rid} to the state before it (verified by digest): "
                "nothing of it remains"
            )
        else:
            said = f"what it wrote is still there: undo it with 'bmc-backup rollback {rid}'"
        raise PartialRestoreError(
            f"the restore stopped while writing: {exc}; {said}", rollback_id=rid, rolled_back=undone
        ) from exc

    def _plan(self, opts: RestoreOptions, tmp: Path) -> _Planned:
        """Pass 1 for one collection: read-only, into encrypted plan files under ``tmp``."""
        started = time.monotonic()
        target = str(opts.target_collection)
        filters = opts.filters
        report = RestoreReport(
            opts.backup_id, opts.collection, target, opts.strategy.value, opts.dry_run
        )
        expected: StateDigest | None = None
        shape: CollectionShape | None = None
        legacy = opts.legacy_documents
        if legacy is not None:
            docs, deleted = iter(legacy), set[bytes]()
        else:
            source = restore_source(
                self.store, self.keyring, opts.backup_id, opts.collection, filters.point_in_time
            )
            points = source.points
            report.backup_id = points[-1].ref.backup_id
            report.chain = [p.ref.backup_id for p in points]
            report.replay = source.replay
            self.log(
                f"restore of {opts.collection} from {report.backup_id}: "
                f"verifying {len(points)} backup(s)"
            )
            verify_chain(points, self.keyring)
            docs, deleted = point_documents(points, self.keyring, tmp, newer=source.layers)
            report.phase("verify_backup", started)
            if source.replay is not None:
                self.log(f"restore of {opts.collection}: replaying captured changes "
                         f"from {source.replay['since']} to {source.replay['to']}")  # fmt: skip
                # no digest was recorded at that second: the one of the state the backup and
                # the replayed changes give, summed as they are read, is what must read back
                expected = StateDigest()
                docs = summed(docs, expected)
            else:
                expected = points[-1].entry.state.digest_value()
            if opts.indexes:
                shape = CollectionShape.of(points[-1].entry.metadata)
            if not filters.drop_deleted or filters.selective:
                deleted = set()

        coll = self.db[target]
        t = time.monotonic()
        before, before_digest = read_target(coll, self.settings.mongodb.batch_size, tmp)
        plan = PlanFiles(tmp, self.keyring, self.settings)
        quarantine = Quarantine(
            self.store, self.keyring, target,
            level=self.settings.compression.level,
            segment_size=self.settings.encryption.segment_size,
        )  # fmt: skip
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
        if quarantine.path is not None:
            report.quarantine_file = str(quarantine.path)
            report.quarantine_id = quarantine.quarantine_id
        report.phase("plan", t)
        before_count = len(before)
        before.close()  # the plan is written: only the counts are kept
        complete = before_count == 0 and not filters.selective and legacy is None
        return _Planned(opts, report, coll, plan, before_digest, before_count,
                        expected if complete else None, shape)  # fmt: skip

    def _apply(self, p: _Planned) -> None:
        """Passes 2 and 3 for one planned collection: indexes, writes, read-back."""
        report, coll = p.report, p.coll
        t = time.monotonic()
        index_errors: dict[str, str] = {}
        if p.shape is not None and p.before_count == 0:  # empty target: indexes first
            ensure_collection(self.db, report.target_collection, p.shape)
            report.indexes_created, index_errors = create_indexes(coll, p.shape)
        self._write(coll, p.plan, report)
        if p.shape is not None and p.before_count > 0:  # documents there: indexes after
            report.indexes_created, index_errors = create_indexes(coll, p.shape)
        t = report.phase("write", t)
        p.read_back = verify_restore(
            coll,
            p.plan,
            report,
            before_count=p.before_count,
            expected=p.expected,
            batch_size=self.settings.mongodb.batch_size,
            expected_is="backup" if p.report.replay is None else "backup and captured changes",
        )
        if p.shape is not None:
            missing_because_failed = {f"index {name} is missing" for name in index_errors}
            differences = list(index_errors.values()) + [
                d for d in compare_indexes(coll, p.shape) if d not in missing_because_failed
            ]
            report.index_errors = list(index_errors.values())
            if differences:
                report.verified = False
                report.verification.extend(differences)
            else:
                n = len(p.shape.indexes)
                report.verification.append(f"{n} index(es) as the backup records them")
        report.phase("read_back", t)
        # its own phases: in a whole-point restore the collections wait for each other's turn
        report.duration_s = sum(report.phases_s.values())
        self.log(
            f"restore of {report.collection} into {report.target_collection}: "
            f"{report.restored} restored, {report.skipped} skipped, {report.invalid} invalid, "
            f"verified={report.verified}"
        )

    def _plan_files(self, files: FilesRequest) -> FilesPlan:
        ref, manifest = files_point(self.store, self.keyring, files.backup_id, files.point_in_time)
        return FilesPlan(self.blobs(), ref, manifest, files.target, files.patterns, files.dry_run)

    def blobs(self) -> BlobStore:
        return BlobStore(
            self.store,
            self.keyring,
            level=self.settings.compression.level,
            segment_size=self.settings.encryption.segment_size,
        )

    def _write(self, coll: Any, plan: PlanFiles, report: RestoreReport) -> None:
        progress = WriteProgress(report.inserted + report.overwritten + report.merged, self.log)
        in_batches(plan.read("insert"), self.batch, lambda d: insert(coll, d), progress)
        in_batches(plan.read("replace"), self.batch, lambda d: replace(coll, d), progress)
        ids = [decode_id(id_element(d)) for d in plan.read("delete")]
        delete_ids(coll, ids, self.batch)

    def rollback(
        self, rollback_id: str, *, force: bool = False, lock: bool = True
    ) -> dict[str, Any]:
        """Return what a restore changed (collections, files) to its state before it.

        Refused when documents it would replace or delete changed after the restore, unless
        ``force`` (see :mod:`.rollback`); ``lock=False`` only where this process holds the
        targets' restore locks already.
        """
        return rollback_to(
            self.settings, self.store, self.keyring, self.db, self.blobs(), rollback_id,
            force=force, lock=lock,
        )  # fmt: skip
