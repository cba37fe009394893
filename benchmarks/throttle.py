"""What a full backup costs the chatbot's writes, with and without ``mongodb.max_read_mb_per_s``.

    python -m benchmarks.throttle [--conversations 20000] [--rate 2]

Starts a throwaway FerretDB (or uses MONGODB_URI), loads N sample conversations, then measures in
the same run the latency of single inserts (what the chatbot does for each message) into another
collection:

* with nothing else running (the floor);
* while a full backup of the conversations runs at full speed (in its own process, as the
  Dagster run or the command would);
* while the same backup runs throttled to ``--rate`` MiB/s;

and prints p50 and p99 of each, with the backup's duration.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import bench_settings, load_conversations, server_name, server_uri
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.store import BackupStore


def _latencies(db: Any, stop: threading.Event | None, count: int) -> list[float]:
    """Single inserts until ``stop`` is set (or ``count`` of them), each timed, in ms."""
    coll = db["bench_writes"]
    out: list[float] = []
    while (stop is None and len(out) < count) or (stop is not None and not stop.is_set()):
        t = time.perf_counter()
        coll.insert_one({"session_id": f"s-{len(out)}", "text": "hola, quiero cotizar" * 5})
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)  # a chatbot under load, not a write benchmark
    return out


def _pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def backup_child(uri: str, rate: str, backup_dir: str) -> None:
    """The backup, in a process of its own as it is in production (not sharing the writer's
    interpreter lock); prints its duration."""
    s = bench_settings(uri, "bmc_bench", Path(backup_dir), ["conversations"])
    limit = float(rate) or None
    s = s.model_copy(update={"mongodb": s.mongodb.model_copy(update={"max_read_mb_per_s": limit})})
    db = connect(uri)["bmc_bench"]
    engine = BackupEngine(s, db, BackupStore(s.backup_dir), KeyRing([Key(os.urandom(32))]))
    t = time.perf_counter()
    engine.run("full", ["conversations"], include_files=False)
    print(f"{time.perf_counter() - t:.3f}")


def _during_backup(uri: str, tmp: Path, rate: float | None) -> tuple[list[float], float]:
    args = ["--backup-child", uri, str(rate or 0), str(tmp / f"backups-{rate}")]
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.throttle", *args], stdout=subprocess.PIPE, text=True
    )
    stop = threading.Event()

    def wait() -> None:
        child.wait()
        stop.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    lat = _latencies(connect(uri)["bmc_bench"], stop, 0)
    waiter.join()
    assert child.stdout is not None and child.returncode == 0
    return lat, float(child.stdout.read().split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=2.0, help="MiB/s for the throttled backup")
    ap.add_argument("--backup-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backup_child:
        backup_child(*args.backup_child)
        return
    with tempfile.TemporaryDirectory() as d, server_uri(Path(d)) as uri:
        db = connect(uri)["bmc_bench"]
        load_conversations(db, "conversations", args.conversations, seed=3)
        print(f"server: {server_name()}; {args.conversations} conversations")
        floor = _latencies(db, None, 400)
        rows: list[tuple[str, list[float], float | None]] = [
            ("nothing else running (floor)", floor, None)
        ]
        for label, rate in (("full backup, full speed", None),
                            (f"full backup at {args.rate:g} MiB/s", args.rate)):  # fmt: skip
            lat, seconds = _during_backup(uri, Path(d), rate)
            rows.append((label, lat, seconds))
        print(f"{'single inserts':<34} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'backup s':>9}")
        for label, lat, took in rows:
            backup = f"{took:9.1f}" if took is not None else f"{'':>9}"
            print(f"{label:<34} {len(lat):>6} {_pct(lat, 0.5):8.2f} {_pct(lat, 0.99):8.2f} {backup}"
                  f"   (mean {statistics.mean(lat):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
