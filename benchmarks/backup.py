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

from bmc_pipeline.config import load_settings
from bmc_pipeline.devdb import DevServer, ferretdb_binary, free_port
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.sample_data import generate
from bmc_pipeline.engine.store import BackupStore

ROOT = Path(__file__).resolve().parent.parent


def load(db: object, name: str, n: int) -> None:
    coll = db[name]  # type: ignore[index]
    coll.drop()
    buf = []
    for c, doc in generate(n, seed=7):
        if c == "conversations":
            buf.append(doc)
            if len(buf) == 2000:
                coll.insert_many(buf, ordered=False)
                buf = []
    if buf:
        coll.insert_many(buf, ordered=False)
    coll.create_index("updated_at")


def engine(uri: str, database: str, backup_dir: Path, key: bytes, collection: str) -> BackupEngine:
    env = {
        "BMC_CONFIG": str(ROOT / "backup_config.json"),
        "MONGODB_URI": uri,
        "BMC_DATABASE": database,
        "BMC_BACKUP_DIR": str(backup_dir),
    }
    s = load_settings(env=env)
    cfg = s.collections["conversations"]
    s = s.model_copy(update={"collections": {collection: cfg}})
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

    with tempfile.TemporaryDirectory() as tmp:
        server = None
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            server = DevServer(ferretdb_binary(ROOT / ".tools"), Path(tmp) / "db", free_port())
            uri = server.start()
        try:
            run(uri, args.conversations, Path(tmp), server is not None)
        finally:
            if server:
                server.stop()


def run(uri: str, n: int, tmp: Path, ferret: bool) -> None:
    database = "bmc_bench"
    db = connect(uri)[database]
    print(f"server: {'FerretDB (SQLite)' if ferret else uri}")
    t0 = time.perf_counter()
    load(db, "conv_big", n)
    load(db, "conv_small", 10_000)
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
