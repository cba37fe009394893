"""``capture``: continuous capture of the change log, a long-running process (a service).

It is not a Dagster run: it runs until SIGTERM or SIGINT (systemd's stop, Ctrl-C), sealing a
segment every ``capture.segment_seconds`` and once more on the way out. The Dagster side watches
what it writes (the capture sensor and assets).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
from pymongo.errors import PyMongoError

from bmc_pipeline.cli.options import Commands, json_option, print_json, say
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.alerts import Alert
from bmc_pipeline.engine.capture.runner import (
    START_MARGIN,
    CaptureRunner,
    SealStats,
    newest_full_watermark,
)
from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.capture.sources import detect_source
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import EXIT_OK, BmcError, DatabaseError
from bmc_pipeline.engine.mongo import describe, masked_uri

commands = Commands()


@commands("capture", help="capture changes continuously into segments until SIGTERM/SIGINT")
@click.option("--seconds", type=float, help="stop by itself after this many seconds")
@click.option(
    "--segment-seconds", type=float, help="seal a segment this often (capture.segment_seconds)"
)
@click.option("--quiet", "-q", is_flag=True, help="no progress lines on stderr")
@json_option
def capture(
    settings: Settings,
    seconds: float | None,
    segment_seconds: float | None,
    quiet: bool,
    json: bool,
) -> int:
    dep = Deployment(settings)
    keyring = dep.keyring()
    store = dep.store()
    db = dep.database()
    source = detect_source(
        db.client, db.name, masked_uri(settings.mongodb.uri), prefer=settings.capture.source
    )
    notifier = dep.notifier()
    log = say(quiet)

    def notify(key: str, message: str) -> None:
        notifier.send(
            Alert(key=key, severity="critical", title="Capture lost history", text=message)
        )

    remote = dep.remote()

    def copy_offsite(_: SealStats) -> None:
        """Each sealed segment to storage.remote_url at once; a failure waits for the next."""
        assert remote is not None
        try:
            remote.push_capture(store, keyring)
        except BmcError as exc:
            log(f"capture: copying segments to {remote.url} failed ({exc}); next seal retries")

    runner = CaptureRunner(
        CaptureStore(store, keyring),
        source,
        database=db.name,
        segment_seconds=segment_seconds or settings.capture.segment_seconds,
        log=log,
        notify=notify,
        on_seal=copy_offsite if remote is not None else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log(f"capture: {signal.Signals(signum).name}: sealing what is in hand, then stopping")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = threading.Timer(seconds, stop.set) if seconds else None
    try:
        newest_full = newest_full_watermark(store, keyring, list(settings.collections))
        pos = runner.start(newest_full - START_MARGIN if newest_full else None)
        log(f"capture: {source.name} of {db.name}, a segment every {runner.segment_seconds:g} s")
        if timer is not None:
            timer.start()
        try:
            runner.run(stop)
        except PyMongoError as exc:
            raise DatabaseError(
                f"capture stopped: {masked_uri(settings.mongodb.uri)} failed ({describe(exc)}); "
                "started again (systemd does), it resumes from its saved position"
            ) from exc
        pos = runner.position or pos
    finally:
        if timer is not None:
            timer.cancel()
        for s, handler in previous.items():
            signal.signal(s, handler)
    summary = {
        "source": source.name,
        "segments_sealed": sum(1 for s in runner.sealed if s.segment),
        "changes": sum(s.changes for s in runner.sealed),
        "recoverable_until": pos.recoverable_until.isoformat() if pos.recoverable_until else None,
        "ranges": [r.model_dump(mode="json") for r in pos.ranges],
        "gaps": [g.model_dump(mode="json") for g in pos.gaps],
    }
    if json:
        print_json(summary)
    else:
        print(
            f"capture stopped: {summary['segments_sealed']} segment(s), {summary['changes']} "
            f"change(s); recoverable until {summary['recoverable_until']}"
        )
    return EXIT_OK
