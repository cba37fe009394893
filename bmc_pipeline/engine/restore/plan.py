"""Pass 1 of a restore, read-only: what to insert, replace and delete, decided per document.

The documents of the backup point stream through the filters, the collection's validation and the
strategy; the decisions go to encrypted temporary archives (:class:`PlanFiles`) so that a restore
of millions of documents holds no more than one batch of them in memory. Invalid documents go to
a quarantine file (never in a dry run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import bson

from bmc_pipeline.config import CollectionSettings, Settings
from bmc_pipeline.engine.archive import ARCHIVE_SUFFIX, ArchiveReader, ArchiveStats, ArchiveWriter
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.digest import document_hash
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.quarantine import Quarantine
from bmc_pipeline.engine.rawbson import datetime_ms, decode_id, id_element, top_level
from bmc_pipeline.engine.restore.filters import RestoreFilters
from bmc_pipeline.engine.restore.merge import merge_documents
from bmc_pipeline.engine.restore.report import RestoreReport
from bmc_pipeline.engine.restore.write import CODEC, Log, fetch_current
from bmc_pipeline.engine.schema import invalid_reason
from bmc_pipeline.engine.spillmap import SpillMap
from bmc_pipeline.engine.vocabulary import Strategy


class PlanFiles:
    """Encrypted temporary archives holding the plan between pass 1 and pass 2.

    Parts: ``insert``, ``replace`` (the new versions), ``previous`` (the current versions that
    ``replace`` overwrites, for the rollback point) and ``delete`` (id documents).
    """

    def __init__(self, directory: Path, keyring: KeyRing, settings: Settings) -> None:
        self.dir = directory
        self.keyring = keyring
        self.settings = settings
        self.writers: dict[str, ArchiveWriter] = {}
        self.handles: dict[str, IO[bytes]] = {}
        self.stats: dict[str, ArchiveStats] = {}

    def add(self, name: str, raw: bytes) -> None:
        if name not in self.writers:
            fh = (self.dir / f"{name}{ARCHIVE_SUFFIX}").open("wb")
            self.handles[name] = fh
            self.writers[name] = ArchiveWriter(
                fh,
                self.keyring,
                level=1,
                segment_size=self.settings.encryption.segment_size,
                name=name,
            )
        self.writers[name].write_batch(raw)

    def close(self) -> None:
        for name, w in self.writers.items():
            self.stats[name] = w.close()
            self.handles[name].close()

    def read(self, name: str) -> Iterator[bytes]:
        path = self.dir / f"{name}{ARCHIVE_SUFFIX}"
        if not path.exists():
            return
        with path.open("rb") as fh:
            yield from ArchiveReader(fh, self.keyring, name=name).documents()


class RestorePlanner:
    """Decides, document by document, what a restore into ``coll`` does."""

    def __init__(
        self,
        coll: Any,
        cfg: CollectionSettings,
        report: RestoreReport,
        plan: PlanFiles,
        *,
        batch_size: int,
        log: Log,
    ) -> None:
        self.coll, self.cfg, self.report, self.plan = coll, cfg, report, plan
        self.batch_size, self.log = batch_size, log

    def run(
        self,
        docs: Iterator[bytes],
        before: SpillMap,
        filters: RestoreFilters,
        quarantine: Quarantine,
        fail_fast: bool,
        *,
        dedupe: bool = False,
    ) -> None:
        report, plan = self.report, self.plan
        conflicts: list[tuple[bytes, bytes]] = []
        # a backup chain holds each id once; a file found on disk may hold one twice
        seen_ids = SpillMap(directory=self.plan.dir) if dedupe else None
        next_report = time.monotonic() + 2.0
        for raw in docs:
            report.read += 1
            if time.monotonic() >= next_report:
                self.log(f"planning: {report.read} documents read from the backup")
                next_report = time.monotonic() + 2.0
            if not filters.accepts(raw, self.cfg.timestamp_field):
                report.filtered_out += 1
                continue
            elem = id_element(raw)
            if seen_ids is not None:
                if elem in seen_ids:
                    report.skipped += 1
                    report.duplicates += 1
                    report.sample("duplicate", elem)
                    continue
                seen_ids[elem] = b""
            reason = invalid_reason(raw, self.cfg.required_fields)
            if reason:
                report.invalid += 1
                report.sample("invalid", elem)
                if len(report.errors) < 100:
                    report.errors.append(f"{decode_id(elem)}: {reason}")
                if fail_fast:
                    raise BmcError(
                        f"document {decode_id(elem)} is invalid ({reason}); stopped (fail_fast)"
                    )
                if not report.dry_run:  # a dry run writes nothing, not even the quarantine
                    quarantine.add(raw, reason)
                continue
            current = before.get(elem)
            if current is None:
                report.inserted += 1
                report.sample("insert", elem)
                plan.add("insert", raw)
            elif current == document_hash(raw):
                report.skipped += 1
                report.unchanged += 1
            elif report.strategy == Strategy.skip_duplicates:
                report.skipped += 1
                report.sample("skip", elem)
            else:
                conflicts.append((elem, raw))
                if len(conflicts) >= self.batch_size:
                    self.resolve_conflicts(conflicts)
                    conflicts = []
        if conflicts:
            self.resolve_conflicts(conflicts)

    def resolve_conflicts(self, conflicts: list[tuple[bytes, bytes]]) -> None:
        """Apply the strategy to documents whose current version differs from the backup's."""
        report, plan, cfg = self.report, self.plan, self.cfg
        current = fetch_current(self.coll, [decode_id(e) for e, _ in conflicts])
        for elem, raw in conflicts:
            cur = current.get(elem)
            if cur is None:  # deleted since the scan: nothing to clobber
                report.inserted += 1
                plan.add("insert", raw)
                continue
            if report.strategy == Strategy.overwrite:
                new, action = raw, "overwritten"
            elif report.strategy == Strategy.timestamp_based:
                ts = cfg.timestamp_field
                b = datetime_ms(*top_level(raw).get(ts, (0, b""))) if ts else None
                c = datetime_ms(*top_level(cur).get(ts, (0, b""))) if ts else None
                if b is None or c is None or b <= c:
                    report.skipped += 1
                    report.sample("skip", elem)
                    continue
                new, action = raw, "overwritten"
            else:
                merged = merge_documents(
                    bson.decode(cur, codec_options=CODEC),
                    bson.decode(raw, codec_options=CODEC),
                    timestamp_field=cfg.timestamp_field,
                    merge_keys=cfg.merge_keys,
                )
                new, action = bson.encode(merged, codec_options=CODEC), "merged"
                if new == cur:
                    report.skipped += 1
                    report.unchanged += 1
                    continue
            setattr(report, action, getattr(report, action) + 1)
            report.sample(action, elem)
            plan.add("previous", cur)
            plan.add("replace", new)
