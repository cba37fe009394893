"""Full and incremental backup speed against a real server, next to a plain cursor read.

    python -m benchmarks.backup [--conversations 100000]

Starts a throwaway FerretDB (or uses MONGODB_URI), loads N sample conversations (about 2.7 KB
each), then measures in the same run:

* the floor: a plain pymongo ``find_raw_batches`` read of the whole collection;
* a full backup of the collection (documents per second, and its ratio to the floor);
* peak memory of full backups of 10,000 and N documents (child processes);
* an incremental after 1 % more documents arrived, as a share of the full backup's time;
* validating the full backup (every archive decrypted, authenticated and its documents counted),
  in a child process: time, and peak memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bson import ObjectId

from benchmarks.common import (
    bench_settings,
    in_child,
    load_conversations,
    peak_rss_mib,
    server_name,
    server_uri,
)
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import generate
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.validate import validate_backup


def engine(uri: str, database: str, backup_dir: Path, key: bytes, collection: str) -> BackupEngine:
    s = bench_settings(uri, database, backup_dir, [collection])
    return BackupEngine(s, connect(uri)[database], BackupStore(backup_dir), KeyRing([Key(key)]))


def memory_child(uri: str, database: str, collection: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = peak_rss_mib()
        r = engine(uri, database, Path(d), os.urandom(32), collection).run(
            "full", [collection], include_files=False
        )
        print(r.collections[collection].documents.documents, f"{base:.1f}", f"{peak_rss_mib():.1f}")


def validate_child(backup_dir: str, key_hex: str, backup_id: str) -> None:
    store = BackupStore(Path(backup_dir))
    t0 = time.perf_counter()
    report = validate_backup(
        store, store.resolve(backup_id), KeyRing([Key(bytes.fromhex(key_hex))])
    )
    print(int(report.ok), f"{time.perf_counter() - t0:.3f}", f"{peak_rss_mib():.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--validate-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(
        "--memory-only", action="store_true", help="load, then only the peak-memory measurements"
    )
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.validate_child:
        validate_child(*args.validate_child)
        return

    with tempfile.TemporaryDirectory() as tmp, server_uri(Path(tmp)) as uri:
        run(uri, args.conversations, Path(tmp), memory_only=args.memory_only)


def run(uri: str, n: int, tmp: Path, *, memory_only: bool = False) -> None:
    database = "bmc_bench"
    db = connect(uri)[database]
    print(f"server: {server_name()}")
    t0 = time.perf_counter()
    load_conversations(db, "conv_big", n, seed=7)
    load_conversations(db, "conv_small", 10_000, seed=7)
    for name in ("conv_big", "conv_small"):
        db[name].create_index("updated_at")
    print(f"loaded {n} + 10000 conversations in {time.perf_counter() - t0:.0f} s")
    if memory_only:
        memory(uri, database)
        return

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

    ok, t_val, peak = in_child(
        "benchmarks.backup", "--validate-child", str(tmp / "backups"), key.hex(), full.backup_id
    )
    print(
        f"validate the full backup:  {n / max(float(t_val), 1e-3):8.0f} docs/s  ({float(t_val):.1f} s, "
        f"ok={bool(int(ok))}, peak RSS {float(peak):.0f} MiB)"
    )

    # 1 % new documents. (Updating 1 % in place would test the same code path, but FerretDB's
    # SQLite handler takes many minutes for an update_many over 100,000 documents.)
    now = datetime.now(timezone.utc)
    extra = []
    for _, doc in generate(n // 100, seed=99):
        if "messages" in doc:
            doc["_id"] = ObjectId()
            doc["updated_at"] = now
            extra.append(doc)
    db["conv_big"].insert_many(extra)
    t0 = time.perf_counter()
    inc = eng.run("incremental", ["conv_big"], include_files=False)
    t_inc = time.perf_counter() - t0
    c = inc.collections["conv_big"]
    print(
        f"incremental, 1 % new:    {t_inc:.1f} s = {t_inc / t_full:.2f} of the full backup's "
        f"{t_full:.1f} s ({c.documents.documents} new documents stored)"
    )

    memory(uri, database)


def memory(uri: str, database: str) -> None:
    """Peak memory of full backups of 10,000 and of N documents, each in a child process."""
    for coll in ("conv_small", "conv_big"):
        count, base, peak = in_child("benchmarks.backup", "--memory-child", uri, database, coll)
        print(
            f"memory, full backup of {int(count):6d} documents: peak RSS {float(peak):.0f} MiB "
            f"({float(base):.0f} MiB before it started)"
        )


if __name__ == "__main__":
    main()
