"""Restore speed against a real server, next to a plain ``insert_many`` of the same documents.

    python -m benchmarks.restore [--conversations 10000] [--big 100000]

Starts a throwaway FerretDB (or uses MONGODB_URI) and measures in the same run:

* the floor: ``insert_many`` of the backup's raw documents into an empty collection;
* a restore of N conversations into an empty collection (the whole restore: authenticate the
  chain, plan, rollback point, write, read everything back and compare the state digest);
* a restore of the big collection with ``skip_duplicates`` where half of the documents exist;
* peak memory of both restores (child processes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    bench_settings,
    in_child,
    load_conversations,
    peak_rss_mib,
    server_name,
    server_uri,
)
from bmc_pipeline.engine.archive import ArchiveReader
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect, insert_raw
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.store import BackupStore


def child(
    uri: str, database: str, backup_dir: str, key_hex: str, bid: str, coll: str, target: str
) -> None:
    s = bench_settings(uri, database, Path(backup_dir), [coll])
    db = connect(uri, socket_timeout_ms=1_800_000)[database]
    eng = RestoreEngine(
        s, db, BackupStore(Path(backup_dir)), KeyRing([Key(bytes.fromhex(key_hex))])
    )
    t0 = time.perf_counter()
    r = eng.restore(bid, coll, target_collection=target)
    el = time.perf_counter() - t0
    peak = peak_rss_mib()
    phases = " ".join(f"{k}={v:.1f}s" for k, v in r.phases_s.items())
    print(f"{r.inserted} {r.skipped} {el:.3f} {peak:.1f} {int(r.verified)} {phases}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp, server_uri(Path(tmp)) as uri:
        run(uri, args.conversations, args.big, Path(tmp))


def run_child(
    uri: str, database: str, tmp: Path, key: bytes, bid: str, coll: str, target: str
) -> list[str]:
    return in_child(
        "benchmarks.restore",
        "--child",
        uri,
        database,
        str(tmp / "backups"),
        key.hex(),
        bid,
        coll,
        target,
    )


def run(uri: str, n: int, big: int, tmp: Path) -> None:
    database = "bmc_restore_bench"
    db = connect(uri, socket_timeout_ms=1_800_000)[database]
    key = os.urandom(32)
    ring = KeyRing([Key(key)])
    load_conversations(db, "small", n, seed=8)
    load_conversations(db, "big", big, seed=8)
    s = bench_settings(uri, database, tmp / "backups", ["small", "big"])
    backup = BackupEngine(s, db, BackupStore(tmp / "backups"), ring)
    bid = backup.run("full", ["small", "big"], include_files=False).backup_id
    print(f"server: {server_name()}; backup {bid}")

    ref = BackupStore(tmp / "backups").resolve(bid)
    docs = []
    with (ref.payload_dir / "small.bson.zst.enc").open("rb") as fh:
        docs = list(ArchiveReader(fh, ring).documents())
    db["floor"].drop()
    t0 = time.perf_counter()
    for i in range(0, len(docs), 1000):
        insert_raw(db["floor"], docs[i : i + 1000])
    floor = time.perf_counter() - t0
    print(f"floor insert_many of {n} documents: {floor:6.1f} s  {n / floor:7.0f} docs/s")

    inserted, _, el, peak, ok, *phases = run_child(
        uri, database, tmp, key, bid, "small", "small_restored"
    )
    t = float(el)
    print(
        f"restore of {n} into an empty collection: {t:6.1f} s  {int(inserted) / t:7.0f} docs/s  "
        f"ours/floor {floor / t:.2f}  verified={bool(int(ok))}  peak RSS {float(peak):.0f} MiB"
    )
    print(f"  phases: {' '.join(phases)}")

    # the target already holds every other document of the big collection
    slow = connect(uri, socket_timeout_ms=1_800_000)[database]
    slow["big_target"].drop()
    with (ref.payload_dir / "big.bson.zst.enc").open("rb") as fh:
        half = [d for i, d in enumerate(ArchiveReader(fh, ring).documents()) if i % 2 == 0]
    for i in range(0, len(half), 1000):
        insert_raw(slow["big_target"], half[i : i + 1000])
    inserted, skipped, el, peak, ok, *phases = run_child(
        uri, database, tmp, key, bid, "big", "big_target"
    )
    t = float(el)
    print(
        f"restore of {big} with skip_duplicates, half present: {t:6.1f} s  "
        f"{int(inserted) / t:7.0f} inserted docs/s ({inserted} inserted, {skipped} skipped)  "
        f"verified={bool(int(ok))}  peak RSS {float(peak):.0f} MiB"
    )
    print(f"  phases: {' '.join(phases)}")


if __name__ == "__main__":
    main()
