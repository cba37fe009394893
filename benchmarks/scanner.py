"""Recovery scanner throughput next to plain ``json.loads``, and its memory with one huge file.

    python -m benchmarks.scanner [--files 10000] [--total-mb 1000] [--big-mb 500] [--unique]

Generates a tree of JSON arrays of conversations (written with ``default=str``, as exports often
are), one of them ``--big-mb`` large, then measures in the same run:

* the floor: ``json.loads`` of every file, one process;
* the scan of the same tree with 2 worker processes (MB/s);
* each twice, interleaved (floor, scan, floor, scan); the ratio is of the faster of each, and
  both pairwise ratios are printed too (this machine's speed drifts);
* peak memory of a one-process scan of a 50 MB file and of a ``--big-mb`` file (child processes).
"""

from __future__ import annotations

import argparse
import json
import os
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


class Writer:
    """Writes JSON arrays of conversations drawn from ``pool``.

    With ``unique``, every element gets an ``_id`` of its own, so no two are copies of one
    conversation (a single large export); without, the 2,000 conversations of the pool repeat,
    as in a pile of backups taken one after another.
    """

    def __init__(self, pool: list[str], rng: random.Random, unique: bool) -> None:
        self.pool, self.rng, self.unique = pool, rng, unique
        self.n = 0

    def item(self) -> str:
        text = self.rng.choice(self.pool)
        if not self.unique:
            return text
        self.n += 1
        if not (text.startswith('{"_id": "') and text[33] == '"'):
            raise SystemExit("--unique needs conversations that begin with a 24-character _id")
        return f'{{"_id": "{self.n:024x}"' + text[34:]

    def array(self, path: Path, size: int) -> int:
        """A JSON array of about ``size`` bytes; returns its real size."""
        written = 0
        with path.open("w", encoding="utf-8") as fh:
            fh.write("[")
            first = True
            while written < size:
                item = self.item()
                fh.write(item if first else ",\n" + item)
                written += len(item) + 2
                first = False
            fh.write("]")
        return path.stat().st_size


def json_floor(root: Path) -> tuple[float, int]:
    """Seconds for ``json.loads`` of every file in one process, and the objects it returned."""
    t0 = time.perf_counter()
    n = 0
    for p in sorted((root / "backups").iterdir()):
        n += len(json.loads(p.read_text(encoding="utf-8")))
    return time.perf_counter() - t0, n


def child(root: str, workers: int) -> None:
    t0 = time.perf_counter()
    report = scan(
        root=Path(root), directories=["backups"], patterns=PATTERNS, db=None, collections={},
        workers=workers,
    )  # fmt: skip
    el = time.perf_counter() - t0
    s = report.summary
    print(s["conversations_found"], s["unique_conversations"], f"{el:.3f}", f"{peak_rss_mib():.1f}")


def run_child(root: Path, workers: int) -> tuple[str, float, float]:
    """(conversations found and how many distinct, seconds, peak RSS MiB) of a scan of ``root``."""
    n, distinct, el, peak = in_child("benchmarks.scanner", "--child", str(root), str(workers))
    return f"{n} conversations, {distinct} distinct", float(el), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--total-mb", type=int, default=1000)
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--unique", action="store_true", help="every conversation distinct")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    write = Writer(conversation_pool(), random.Random(1), args.unique)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        (root / "backups").mkdir(parents=True)
        small = (args.total_mb - args.big_mb) * 1_000_000 // (args.files - 1)
        total = write.array(root / "backups" / "backup_big.json", args.big_mb * 1_000_000)
        for i in range(args.files - 1):
            total += write.array(root / "backups" / f"backup_{i:05d}.json", small)
        mb = total / 1e6
        # the tree was just written: have the kernel write it out now, not while a measurement
        # runs (its writeback threads would take CPU from two busy workers, not from one process)
        os.sync()
        print(f"tree: {args.files} files, {mb:.0f} MB (one of {args.big_mb} MB)")

        # floor and scan twice each, interleaved; each side's faster time is taken, as timeit
        # does (noise on a shared machine only ever adds time), and every time is printed
        floors: list[float] = []
        scans: list[float] = []
        for _ in range(2):
            el, n_floor = json_floor(root)
            floors.append(el)
            print(
                f"floor, json.loads in one process: {el:6.1f} s  {mb / el:6.1f} MB/s  ({n_floor} objects)"
            )
            n, el, _ = run_child(root, 2)
            scans.append(el)
            print(f"scan, 2 workers:                  {el:6.1f} s  {mb / el:6.1f} MB/s  ({n})")
        print(
            f"ours/floor: {min(floors) / min(scans):.2f} (faster of two each; "
            f"pairwise {floors[0] / scans[0]:.2f} and {floors[1] / scans[1]:.2f})"
        )

        for size in (50, args.big_mb):
            one = Path(tmp) / f"one_{size}"
            (one / "backups").mkdir(parents=True)
            write.array(one / "backups" / "backup_one.json", size * 1_000_000)
            os.sync()
            n, el, peak = run_child(one, 1)
            print(
                f"memory, one-process scan of a {size:4d} MB file: peak RSS {peak:.0f} MiB ({n}; {size / el:.1f} MB/s)"
            )


if __name__ == "__main__":
    main()
