"""Recovery scanner throughput next to plain ``json.loads``, and its memory with one huge file.

    python -m benchmarks.scanner [--files 10000] [--total-mb 1000] [--big-mb 500]

Generates a tree of JSON arrays of conversations (written with ``default=str``, as exports often
are), one of them ``--big-mb`` large, then measures in the same run:

* the floor: ``json.loads`` of every file, one process;
* the scan of the same tree with 2 worker processes (MB/s, and its ratio to the floor);
* peak memory of a one-process scan of a 50 MB file and of a ``--big-mb`` file (child processes).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import in_child, peak_rss_mib
from bmc_pipeline.engine.sample_data import generate
from bmc_pipeline.engine.scanner import scan

PATTERNS = ["backup*.json"]


def conversation_pool(n: int = 3000) -> list[str]:
    return [json.dumps(d, default=str) for c, d in generate(n, seed=5) if c == "conversations"]


def write_array(path: Path, pool: list[str], size: int, rng: random.Random) -> int:
    """A JSON array of conversations of about ``size`` bytes; returns its real size."""
    written = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        first = True
        while written < size:
            item = rng.choice(pool)
            fh.write(item if first else ",\n" + item)
            written += len(item) + 2
            first = False
        fh.write("]")
    return path.stat().st_size


def child(root: str, workers: int) -> None:
    t0 = time.perf_counter()
    report = scan(
        root=Path(root), directories=["backups"], patterns=PATTERNS, db=None, collections={},
        workers=workers,
    )  # fmt: skip
    el = time.perf_counter() - t0
    print(report.summary["conversations_found"], f"{el:.3f}", f"{peak_rss_mib():.1f}")


def run_child(root: Path, workers: int) -> tuple[int, float, float]:
    n, el, peak = in_child("benchmarks.scanner", "--child", str(root), str(workers))
    return int(n), float(el), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--total-mb", type=int, default=1000)
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    rng = random.Random(1)
    pool = conversation_pool()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        (root / "backups").mkdir(parents=True)
        small = (args.total_mb - args.big_mb) * 1_000_000 // (args.files - 1)
        total = write_array(
            root / "backups" / "backup_big.json", pool, args.big_mb * 1_000_000, rng
        )
        for i in range(args.files - 1):
            total += write_array(root / "backups" / f"backup_{i:05d}.json", pool, small, rng)
        mb = total / 1e6
        print(f"tree: {args.files} files, {mb:.0f} MB (one of {args.big_mb} MB)")

        t0 = time.perf_counter()
        n_floor = 0
        for p in sorted((root / "backups").iterdir()):
            n_floor += len(json.loads(p.read_text(encoding="utf-8")))
        floor = time.perf_counter() - t0
        print(
            f"floor, json.loads in one process: {floor:6.1f} s  {mb / floor:6.1f} MB/s  ({n_floor} objects)"
        )

        n, el, _ = run_child(root, 2)
        print(
            f"scan, 2 workers:                  {el:6.1f} s  {mb / el:6.1f} MB/s  ours/floor {floor / el:.2f}  ({n} conversations)"
        )

        for size in (50, args.big_mb):
            one = Path(tmp) / f"one_{size}"
            (one / "backups").mkdir(parents=True)
            write_array(one / "backups" / "backup_one.json", pool, size * 1_000_000, rng)
            n, el, peak = run_child(one, 1)
            print(
                f"memory, one-process scan of a {size:4d} MB file: peak RSS {peak:.0f} MiB ({n} conversations, {size / el:.1f} MB/s)"
            )


if __name__ == "__main__":
    main()
