"""A whole-point restore and the restore drill, next to the single-collection restores they do.

    python -m benchmarks.whole_restore [--conversations 10000] [--repeat 2]

The demo's data set (N conversations and the other four collections, with their indexes, and the
chatbot's files) is backed up once on a throwaway FerretDB (or ``MONGODB_URI``). Then, in the same
run and into empty databases each time:

* the floor: each collection restored on its own (``restore --collection C``), the times summed;
* the whole point at once (``restore latest``): every collection under one rollback point;
* the drill (``bmc-backup drill``): the same restore into the scratch database, verified, dropped.

Targets: the whole restore no slower than the sum of the single ones (it does the same work once
planned together), and the drill's RTO at most 1.10 x the whole restore it performs.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_settings, server_name, server_uri
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.drill import run_drill
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.restore import RestoreEngine, RestoreOptions
from bmc_pipeline.engine.sample_data import seed_database, write_files
from bmc_pipeline.engine.store import BackupStore


def _settings(uri: str, database: str, tmp: Path, key: Key) -> Settings:
    s = bench_settings(
        uri, database, tmp / "backups",
        BMC_FILES_ROOT=str(tmp / "files"),
        BMC_BACKUP_KEY=base64.b64encode(key.material).decode(),
    )  # fmt: skip
    drill = s.drill.model_copy(update={"log_file": str(tmp / "drills.jsonl")})
    return s.model_copy(update={"drill": drill})


def run(uri: str, conversations: int, repeat: int, tmp: Path) -> None:
    database = "bmc_whole_bench"
    key = Key(os.urandom(32))
    ring = KeyRing([key])
    s = _settings(uri, database, tmp, key)
    client = connect(uri, socket_timeout_ms=1_800_000)
    counts = seed_database(client[database], conversations, seed=5)
    write_files(s.files_root, seed=5)
    store = BackupStore(s.backup_dir)
    bid = BackupEngine(s, client[database], store, ring).run("full").backup_id
    total = sum(counts.values())
    print(f"server: {server_name()}; backup {bid}: {total} documents in {len(counts)} collections")

    for attempt in range(1, repeat + 1):
        singles: dict[str, float] = {}
        for name in counts:
            client.drop_database("bench_single")
            engine = RestoreEngine(s, client["bench_single"], store, ring)
            t0 = time.perf_counter()
            report = engine.run(RestoreOptions(backup_id=bid, collection=name))
            singles[name] = time.perf_counter() - t0
            assert report.verified, report.verification
        floor = sum(singles.values())

        client.drop_database("bench_whole")
        engine = RestoreEngine(s, client["bench_whole"], store, ring)
        t0 = time.perf_counter()
        whole = engine.restore_point(bid, None, files_to=tmp / f"files_whole{attempt}")
        whole_s = time.perf_counter() - t0
        assert whole.verified

        t0 = time.perf_counter()
        drill = run_drill(s, client, store, ring)
        drill_s = time.perf_counter() - t0
        assert drill.ok, drill.as_dict()

        each = ", ".join(f"{n} {t:.2f}" for n, t in singles.items())
        print(f"run {attempt}: single-collection restores: {floor:6.2f} s ({each})")
        print(
            f"run {attempt}: whole point at once:         {whole_s:6.2f} s "
            f"{total / whole_s:7.0f} docs/s  whole/singles {whole_s / floor:.2f} (target <= 1.00)"
        )
        print(
            f"run {attempt}: drill (RTO {drill.rto_s:.2f} s):     {drill_s:6.2f} s "
            f"drill/whole {drill_s / whole_s:.2f} (target <= 1.10)"
        )
    client.drop_database("bench_single")
    client.drop_database("bench_whole")
    client.drop_database(database)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, server_uri(Path(tmp)) as uri:
        run(uri, args.conversations, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
