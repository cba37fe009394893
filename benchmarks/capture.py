"""Continuous capture on FerretDB's emulated oplog, with the floors measured in the same run.

    python -m benchmarks.capture [--conversations 10000] [--seconds 15] [--segment-seconds 30]

Starts a throwaway FerretDB with its oplog (or uses MONGODB_URI, which must then offer one) and
`bmc-backup capture` as a child process, as a service would run it, then measures:

* the write throughput of single inserts (a chatbot-like load) without capture, then with it;
* capture lag, from each write (client clock) to the sealing of the segment holding it, p50 and
  p99, at 100 and at 1,000 writes/s offered (the rate reached is printed: FerretDB may not keep
  up with 1,000 single inserts a second on a small machine);
* replay: a restore to the newest captured second of documents that exist only in segments,
  next to ``insert_many`` of the same documents (whole restore, and its write phase);
* incrementals at 1 % changed: bytes and time next to the full, from a collection read
  (timestamps) and from segments.

    python -m benchmarks.capture --incremental-only --conversations 1000000

measures only the last at scale (with its peak memory), and ``--index-cost`` (no server) what the
id index earlier versions wrote beside a full would cost.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bson

from benchmarks.common import (
    ROOT,
    bench_settings,
    in_child,
    load_conversations,
    peak_rss_mib,
    server_name,
)
from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import DevServer, ephemeral_server, ferretdb_binary, free_port
from bmc_pipeline.engine.archive import ArchiveWriter
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.chain import resolve_chain
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.digest import document_hash
from bmc_pipeline.engine.mongo import connect, insert_raw
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters, RestoreOptions
from bmc_pipeline.engine.sample_data import generate
from bmc_pipeline.engine.store import BackupStore

DB = "bmc_capture_bench"


class CaptureProcess:
    """`bmc-backup capture` in a child process, stopped with SIGTERM."""

    def __init__(self, config: Path, key: bytes, segment_seconds: float) -> None:
        env = {**os.environ, "BMC_BACKUP_KEY": base64.b64encode(key).decode()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bmc_pipeline.cli", "--config", str(config), "capture",
             "--segment-seconds", str(segment_seconds), "--quiet"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            raise SystemExit(f"capture failed: {err}")


def wait_covered(capture: CaptureStore, after: datetime, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pos = capture.position()
        if pos is not None and pos.recoverable_until and pos.recoverable_until > after:
            return
        time.sleep(0.1)
    raise SystemExit(f"capture did not cover {after.isoformat()} within {timeout:.0f} s")


def docs(n: int, seed: int, tag: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c, doc in generate(n, seed=seed):
        if c == "conversations":
            doc["_id"] = f"{tag}-{len(out)}"
            out.append(doc)
    return out[:n]


def single_inserts(
    coll: Any, batch: list[dict[str, Any]], rate: float | None
) -> tuple[float, list[tuple[str, float]]]:
    """Insert one by one (at ``rate`` a second, if given); (writes/s reached, (id, time) each)."""
    stamps = []
    start = time.perf_counter()
    for i, doc in enumerate(batch):
        if rate:
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        coll.insert_one(doc)
        stamps.append((doc["_id"], time.time()))
    return len(batch) / (time.perf_counter() - start), stamps


def lags(capture: CaptureStore, stamps: list[tuple[str, float]]) -> list[float]:
    """Seconds from each write to the sealing of the segment that holds it."""
    sealed_at: dict[str, float] = {}
    for seg in capture.segments():
        sealed = datetime.fromisoformat(capture.manifest(seg)["segment"]["sealed"]).timestamp()
        for c in capture.changes(seg, "lag"):
            if c.op == "p" and c.collection == "lag":
                sealed_at.setdefault(str(bson.decode(c.raw)["_id"]), sealed)
    return [sealed_at[i] - t for i, t in stamps if i in sealed_at]


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def prepare(uri: str, tmp: Path, n: int) -> tuple[bytes, KeyRing, Settings, Path, Any, BackupStore]:
    """A key, settings and their config file, and ``n`` conversations loaded."""
    key = os.urandom(32)
    s = bench_settings(uri, DB, tmp / "backups", ["conversations"])
    config = tmp / "config.json"
    config.write_text(s.model_dump_json())
    db = connect(uri, socket_timeout_ms=1_800_000)[DB]
    load_conversations(db, "conversations", n, seed=5)
    return key, KeyRing([Key(key)]), s, config, db, BackupStore(tmp / "backups")


def run(uri: str, tmp: Path, n: int, seconds: float, segment_seconds: float) -> None:
    key, ring, s, config, db, store = prepare(uri, tmp, n)
    coll = db["conversations"]
    capture = CaptureStore(store, ring)
    print(
        f"server: {server_name()} with its oplog; {n} conversations; segments every {segment_seconds:g} s"
    )

    t0 = time.perf_counter()
    full = BackupEngine(s, db, store, ring).run("full", ["conversations"], include_files=False)
    full_s = time.perf_counter() - t0
    full_bytes = full.size_bytes

    # -- write throughput with and without capture ------------------------------------------
    without, _ = single_inserts(db["load_without"], docs(6000, 11, "w0"), None)
    proc = CaptureProcess(config, key, segment_seconds)
    wait_covered(capture, datetime.now(timezone.utc))
    with_capture, _ = single_inserts(db["load_with"], docs(6000, 11, "w1"), None)
    print(f"single inserts without capture: {without:7.0f} writes/s; with capture running: "
          f"{with_capture:7.0f} writes/s; ratio {with_capture / without:.2f} (target >= 0.9)")  # fmt: skip

    # -- lag at two offered rates --------------------------------------------------------------
    for rate in (100, 1000):
        batch = docs(int(rate * seconds), 12, f"r{rate}")
        reached, stamps = single_inserts(db["lag"], batch, rate)
        wait_covered(capture, datetime.now(timezone.utc))
        got = lags(capture, stamps)
        print(f"lag at {rate} writes/s offered ({reached:.0f} reached, {len(got)}/{len(stamps)} "
              f"captured): p50 {pct(got, 50):.2f} s  p99 {pct(got, 99):.2f} s  max {max(got):.2f} s")  # fmt: skip
    proc.stop()

    # -- replay: documents that exist only in segments -----------------------------------------
    db["replayed_src"].drop()
    base = BackupEngine(s, db, store, ring)
    s2 = bench_settings(uri, DB, tmp / "backups", ["replayed_src"])
    BackupEngine(s2, db, store, ring).run("full", ["replayed_src"], include_files=False)  # empty
    config2 = tmp / "config2.json"
    config2.write_text(s2.model_dump_json())
    proc = CaptureProcess(config2, key, segment_seconds)
    wait_covered(capture, datetime.now(timezone.utc))
    replay_docs = docs(n, 13, "p")
    for i in range(0, len(replay_docs), 500):
        db["replayed_src"].insert_many(replay_docs[i : i + 500])
    wait_covered(capture, datetime.now(timezone.utc))
    proc.stop()
    raw = [bson.encode(d) for d in db["replayed_src"].find()]
    t0 = time.perf_counter()
    for i in range(0, len(raw), 1000):
        insert_raw(db["floor"], raw[i : i + 1000])
    floor = time.perf_counter() - t0
    pos = capture.position()
    assert pos is not None and pos.recoverable_until is not None
    t0 = time.perf_counter()
    report = RestoreEngine(s2, db, store, ring).run(RestoreOptions(
        collection="replayed_src", target_collection="replayed",
        filters=RestoreFilters(point_in_time=pos.recoverable_until),
    ))  # fmt: skip
    replay_s = time.perf_counter() - t0
    write_s = report.phases_s.get("write", replay_s)
    print(
        f"floor insert_many of {len(raw)} documents: {floor:6.2f} s  {len(raw) / floor:7.0f} docs/s"
    )
    print(f"restore replaying {report.inserted} captured inserts: {replay_s:6.2f} s  "
          f"ours/floor {floor / replay_s:.2f}; its write phase {write_s:.2f} s, "
          f"ours/floor {floor / write_s:.2f} (target >= 0.7)  verified={report.verified}")  # fmt: skip

    # -- incrementals at 1 % changed ------------------------------------------------------------
    ids = [d["_id"] for d in coll.find({}, {"_id": 1}).limit(n // 100)]

    def change(tag: str) -> None:
        for i in ids:
            coll.update_one(
                {"_id": i}, {"$set": {"updated_at": datetime.now(timezone.utc), "tag": tag}}
            )

    change("scanned")
    scan_engine = BackupEngine(s, db, store, ring)
    scan_engine.capture = None  # as if capture had never run: read the collection
    t0 = time.perf_counter()
    scanned = scan_engine.run("incremental", ["conversations"], include_files=False)
    scan_s = time.perf_counter() - t0
    proc = CaptureProcess(config, key, segment_seconds)
    wait_covered(capture, datetime.now(timezone.utc))
    change("captured")
    wait_covered(capture, datetime.now(timezone.utc))
    proc.stop()
    t0 = time.perf_counter()
    from_segments = base.run("incremental", ["conversations"], include_files=False)
    seg_s = time.perf_counter() - t0
    how = from_segments.manifest.collections["conversations"].change_detection
    print(f"full backup: {full_s:6.2f} s  {full_bytes:>10,} bytes")
    index_bytes = old_index_bytes(store, ring, full.backup_id)
    print(f"the id index earlier versions wrote beside it (and repeated whole in every "
          f"incremental): {index_bytes:>10,} bytes ({index_bytes / full_bytes:.2f} of the full)")  # fmt: skip
    for label, r, t in (("timestamps", scanned, scan_s), (how, from_segments, seg_s)):
        print(f"incremental at 1 % ({label}): {t:6.2f} s ({t / full_s:.2f} of the full)  "
              f"{r.size_bytes:>10,} bytes ({r.size_bytes / full_bytes:.3f} of the full; target <= 0.1)")  # fmt: skip


def old_index_bytes(store: BackupStore, ring: KeyRing, backup_id: str) -> int:
    """The size of the ``{_id, h}`` index archive earlier versions kept per point, written here
    the same way (zstd level 3, sealed) from the full's documents."""
    point = resolve_chain(store, ring, backup_id, "conversations")[-1]
    out = io.BytesIO()
    writer = ArchiveWriter(out, ring, name="index")
    for raw in point.documents("documents", ring):
        writer.write_batch(bson.encode({"_id": bson.decode(raw)["_id"], "h": document_hash(raw)}))
    return writer.close().stored_bytes


def index_cost(tmp: Path, n: int) -> None:
    """A full backup of ``n`` conversations (in process, no server) and the index beside it."""
    ring = KeyRing([Key(os.urandom(32))])
    s = bench_settings(f"mongomock://{DB}", DB, tmp / "backups", ["conversations"])
    db = connect(s.mongodb.uri)[DB]
    load_conversations(db, "conversations", n, seed=5)
    store = BackupStore(tmp / "backups")
    full = BackupEngine(s, db, store, ring).run("full", ["conversations"], include_files=False)
    index = old_index_bytes(store, ring, full.backup_id)
    print(f"full backup of {n} conversations: {full.size_bytes:>12,} bytes stored")
    print(f"the id index earlier versions wrote beside it: {index:>12,} bytes "
          f"({index / full.size_bytes:.2f} of the full, {index / n:.1f} bytes per document)")  # fmt: skip


def incremental_only(
    uri: str, tmp: Path, n: int, segment_seconds: float, oplog_on: Callable[[], None]
) -> None:
    """At scale: the data loaded without the oplog (FerretDB's grows past its cap while a million
    documents go in, and every read of it is a pass over all of it), ``oplog_on`` restarts the
    server with it, capture starts, a full backup, 1 % new documents, and the incremental from
    segments measured in a child process (its peak memory is its own)."""
    key, ring, s, config, db, store = prepare(uri, tmp, n)
    oplog_on()
    proc = CaptureProcess(config, key, segment_seconds)
    capture = CaptureStore(store, ring)
    wait_covered(capture, datetime.now(timezone.utc) - timedelta(minutes=5), timeout=600)
    db = connect(uri, socket_timeout_ms=1_800_000)[DB]
    t0 = time.perf_counter()
    full = BackupEngine(s, db, store, ring).run("full", ["conversations"], include_files=False)
    full_s = time.perf_counter() - t0
    print(f"server: {server_name()}; full backup of {n}: {full_s:.1f} s, {full.size_bytes:,} bytes")
    # 1 % new conversations: FerretDB answers an update by _id with a scan of the collection
    # (about 13 s each at a million), so at this size the change is new documents
    t0 = time.perf_counter()
    new = docs(n // 100, 17, "new")
    for i in range(0, len(new), 500):
        db["conversations"].insert_many(new[i : i + 500])
    print(f"{len(new)} new documents written in {time.perf_counter() - t0:.1f} s")
    wait_covered(capture, datetime.now(timezone.utc), timeout=3600)
    proc.stop()
    el, size, how, peak = in_child(
        "benchmarks.capture", "--child-incremental", uri, str(tmp / "backups"), key.hex()
    )
    print(f"incremental at 1 % from segments ({how}): {float(el):.1f} s = {float(el) / full_s:.3f} "
          f"of the full; {int(size):,} bytes = {int(size) / full.size_bytes:.4f} of the full; "
          f"peak RSS {float(peak):.0f} MiB")  # fmt: skip


def child_incremental(uri: str, backup_dir: str, key_hex: str) -> None:
    s = bench_settings(uri, DB, Path(backup_dir), ["conversations"])
    db = connect(uri, socket_timeout_ms=1_800_000)[DB]
    engine = BackupEngine(
        s, db, BackupStore(Path(backup_dir)), KeyRing([Key(bytes.fromhex(key_hex))])
    )
    t0 = time.perf_counter()
    r = engine.run("incremental", ["conversations"], include_files=False)
    el = time.perf_counter() - t0
    how = r.manifest.collections["conversations"].change_detection
    print(f"{el:.3f} {r.size_bytes} {how} {peak_rss_mib():.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--segment-seconds", type=float, default=30.0)
    ap.add_argument(
        "--index-cost", action="store_true", help="only: a full and the index it no longer writes"
    )
    ap.add_argument(
        "--incremental-only", action="store_true", help="only: the incremental from segments"
    )
    ap.add_argument("--child-incremental", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_incremental:
        child_incremental(*args.child_incremental)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.index_cost:
            index_cost(Path(tmp), args.conversations)
            return
        if os.environ.get("MONGODB_URI") and args.incremental_only:
            uri = os.environ["MONGODB_URI"]
            incremental_only(uri, Path(tmp), args.conversations, args.segment_seconds, lambda: None)
            return
        if os.environ.get("MONGODB_URI"):
            run(
                os.environ["MONGODB_URI"],
                Path(tmp),
                args.conversations,
                args.seconds,
                args.segment_seconds,
            )
            return
        binary = ferretdb_binary(ROOT / ".tools")
        if args.incremental_only:
            server = DevServer(binary, Path(tmp) / "db", free_port())
            server.start(die_with_parent=True)

            def oplog_on() -> None:
                server.stop()
                server.oplog = True
                server.start(die_with_parent=True)

            try:
                incremental_only(
                    server.uri, Path(tmp), args.conversations, args.segment_seconds, oplog_on
                )
            finally:
                server.stop()
            return
        with ephemeral_server(binary, Path(tmp) / "db", oplog=True) as srv:
            run(srv.uri, Path(tmp), args.conversations, args.seconds, args.segment_seconds)


if __name__ == "__main__":
    main()
