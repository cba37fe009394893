"""Full and incremental backup speed against a real server, next to a plain cursor read.

    python -m benchmarks.backup [--conversations 100000]

Starts a throwaway FerretDB (or uses MONGODB_URI), loads N sample conversations (about 2.7 KB
each), then measures in the same run:

* the floor: a plain pymongo ``find_raw_batches`` read of the whole collection;
* a full backup of the collection (documents per second, and its ratio to the floor);
* peak memory of full backups of 10,000 and N documents (child processes);
* an incremental after 1 % of the documents changed, as a share of the full backup's time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import bench_settings, load_conversations, server_name, server_uri
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.store import BackupStore


def engine(uri: str, database: str, backup_dir: Path, key: bytes, collection: str) -> BackupEngine:
    s = bench_settings(uri, database, backup_dir, [collection])
    return BackupEngine(s, connect(uri)[database], BackupStore(backup_dir), KeyRing([Key(key)]))


def memory_child(uri: str, database: str, collection: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = engine(uri, database, Path(d), os.urandom(32), collection).run(
            "full", [collection], include_files=False
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(r.collections[collection].documents.documents, base, peak)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    with tempfile.TemporaryDirectory() as tmp, server_uri(Path(tmp)) as uri:
        run(uri, args.conversations, Path(tmp))


def run(uri: str, n: int, tmp: Path) -> None:
    database = "bmc_bench"
    db = connect(uri)[database]
    print(f"server: {server_name()}")
    t0 = time.perf_counter()
    load_conversations(db, "conv_big", n, seed=7)
    load_conversations(db, "conv_small", 10_000, seed=7)
    for name in ("conv_big", "conv_small"):
        db[name].create_index("updated_at")
    print(f"loaded {n} + 10000 conversations in {time.perf_counter() - t0:.0f} s")

    t0 = time.perf_counter()
    raw = 0
    for batch in db["conv_big"].find_raw_batches(batch_size=1000):
        raw += len(batch)
    floor = time.perf_counter() - t0
    print(
        f"floor (find_raw_batches): {n / floor:8.0f} docs/s  {raw / floor / 1e6:6.1f} MB/s  ({raw / n:.0f} bytes/doc)"
    )

    key = os.urandom(32)
    eng = engine(uri, database, tmp / "backups", key, "conv_big")
    t0 = time.perf_counter()
    full = eng.run("full", ["conv_big"], include_files=False)
    t_full = time.perf_counter() - t0
    print(
        f"full backup:              {n / t_full:8.0f} docs/s  ours/floor {floor / t_full:.2f}  "
        f"({full.size_bytes / 1e6:.1f} MB stored)"
    )

    # FerretDB's SQLite handler scans the whole collection for this: give it time
    slow = connect(uri, socket_timeout_ms=1_800_000)[database]
    ids = [d["_id"] for d in slow["conv_big"].find({}, {"_id": 1}).limit(n // 100)]
    slow["conv_big"].update_many(
        {"_id": {"$in": ids}},
        {"$set": {"updated_at": datetime.now(timezone.utc), "status": "closed"}},
    )
    t0 = time.perf_counter()
    inc = eng.run("incremental", ["conv_big"], include_files=False)
    t_inc = time.perf_counter() - t0
    c = inc.collections["conv_big"]
    print(
        f"incremental after 1 %:    {t_inc:.1f} s = {t_inc / t_full:.2f} of the full backup's "
        f"{t_full:.1f} s ({c.documents.documents} changed documents stored)"
    )

    for coll in ("conv_small", "conv_big"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.backup", "--memory-child", uri, database, coll],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        count, _base, peak = (int(x) for x in out.stdout.split())
        print(f"memory, full backup of {count:6d} documents: peak RSS {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
