"""Files read by a pool of worker processes, in batches, with workers that die handled.

Each batch's records are written to a spool file that the main process folds in as the batch
finishes. A worker that dies (killed for memory, or crashed) does not end the scan: its files are
read again one per process, and only a file that kills its reader is reported lost.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from bmc_pipeline.engine.scanner.fold import Spool
from bmc_pipeline.engine.scanner.progress import (
    LOCAL_COUNTER,
    Progress,
    ProgressReporter,
    worker_start,
)
from bmc_pipeline.engine.scanner.reading import FileReport, scan_file


def run_batches(
    tasks: list[list[tuple[str, int]]],
    spools: list[Path],
    date_fields: frozenset[str],
    workers: int,
    total: int,
    progress: Progress | None,
) -> Iterator[tuple[list[tuple[int, FileReport]], Path]]:
    """Each batch's file reports and spool, as batches finish; ``progress`` told meanwhile."""
    parallel = workers > 1 and len(tasks) > 1
    ctx = _mp_context() if parallel else multiprocessing.get_context()
    reporter = ProgressReporter(progress, ctx.Value("q", 0), total)
    if not parallel:
        LOCAL_COUNTER.reporter = reporter
        try:
            for t, sp in zip(tasks, spools, strict=True):
                yield scan_files(t, date_fields, str(sp)), sp
        finally:
            LOCAL_COUNTER.reporter = None
        reporter.tick(final=True)
        return

    def pool_of(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=worker_start, initargs=(reporter.counter,)
        )

    left = dict(zip(map(str, spools), tasks, strict=True))  # batches not reported yet
    try:
        with pool_of(workers) as pool:
            pending = {pool.submit(scan_files, t, date_fields, out): out for out, t in left.items()}
            while pending:
                finished, _ = wait(
                    pending, timeout=ProgressReporter.INTERVAL_S, return_when=FIRST_COMPLETED
                )
                for fut in finished:
                    out = pending.pop(fut)
                    results = fut.result()
                    del left[out]
                    yield results, Path(out)
                reporter.tick()
    except BrokenProcessPool:
        # a worker died (killed for want of memory, or crashed): the batches it left are read
        # again a file at a time, each in a process of its own, so that only the file that
        # kills its reader is lost, and it is named
        for out, t in left.items():
            for n, item in enumerate(t):
                one = f"{out}.{n}"
                try:
                    with pool_of(1) as alone:
                        yield alone.submit(scan_files, [item], date_fields, one).result(), Path(one)
                except BrokenProcessPool:
                    Path(one).unlink(missing_ok=True)  # whatever it wrote before it died
                    lost = FileReport(
                        path=item[0], size=file_size(Path(item[0])), error=_READER_DIED
                    )
                    yield [(item[1], lost)], Path(one)
    reporter.tick(final=True)


_READER_DIED = (
    "the process reading this file stopped before it finished (killed, perhaps for want of "
    "memory, or crashed); nothing of it is in this report"
)


_BATCH_BYTES = 8 << 20


def batches_of(items: list[tuple[str, int]], paths: list[Path]) -> list[list[tuple[str, int]]]:
    """Files (largest first) grouped into tasks of about ``_BATCH_BYTES``: few hand-offs to the
    workers for thousands of small files, and a big file alone in its task."""
    tasks: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    size = 0
    for item in items:
        n = file_size(paths[item[1]])
        if current and size + n > _BATCH_BYTES:
            tasks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        tasks.append(current)
    return tasks


def scan_files(
    batch: list[tuple[str, int]], date_fields: frozenset[str], spool_path: str
) -> list[tuple[int, FileReport]]:
    """:func:`scan_file` for a batch of (path, number), into one spool; run in a worker."""
    spool = Spool(Path(spool_path))
    try:  # in file-number order, as the spool's places must be
        return [(i, scan_file(path, date_fields, spool, i)) for path, i in sorted(batch, key=_nth)]
    finally:
        spool.close()


def _nth(item: tuple[str, int]) -> int:
    return item[1]


def _mp_context() -> multiprocessing.context.BaseContext:
    """How to start the workers: from a fork server when this process runs other threads.

    A scan may run in a threaded process (the API's thread pool, a Dagster step); forking such a
    process copies locks other threads may hold, which can hang the child, so workers then come
    from a clean server process (Linux). A single-threaded process (the command line, a script)
    forks directly: no such hazard, and no re-import of an unguarded ``__main__`` script.
    """
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() > 1 and "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
