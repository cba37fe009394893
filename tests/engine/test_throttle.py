"""A backup's reads stay under mongodb.max_read_mb_per_s; without it they are not slowed."""

from __future__ import annotations

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.throttle import Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_the_throttle_sleeps_exactly_what_keeps_the_rate() -> None:
    clock = FakeClock()
    t = Throttle(2.0, clock=clock, sleep=clock.sleep)  # 2 MiB/s
    for _ in range(10):
        t.spend(1024 * 1024)  # 10 MiB, read instantly
    assert abs(clock.now - 5.0) < 1e-9  # 10 MiB at 2 MiB/s
    clock.now += 100  # idle, then more: the budget counts from the start, no burst beyond it
    t.spend(1024 * 1024)
    assert t.slept_s == 5.0
    free = Throttle(None, clock=clock, sleep=clock.sleep)
    free.spend(10**9)
    assert free.slept_s == 0.0


def test_a_throttled_backup_reads_no_faster_than_its_budget(
    mock_settings: Settings, seeded: dict[str, int], keyring: KeyRing
) -> None:
    rate = 0.1  # MiB/s: the sample data (about 60 KB) then takes about half a second
    mongo = mock_settings.mongodb.model_copy(update={"max_read_mb_per_s": rate})
    settings = mock_settings.model_copy(update={"mongodb": mongo})
    db = connect(settings.mongodb.uri)[settings.mongodb.database]
    engine = BackupEngine(settings, db, BackupStore(settings.backup_dir), keyring)
    result = engine.run("full", include_files=False)
    read = sum(c.documents.raw_bytes for c in result.collections.values())
    # it waited about as long as the data takes at that rate (the reads themselves take ~0 s)
    assert engine.throttle.total >= read
    assert engine.throttle.slept_s >= 0.8 * read / (rate * 1024 * 1024)


def test_a_uri_read_preference_reaches_the_client() -> None:
    client = connect(
        "mongodb://127.0.0.1:1/?readPreference=secondaryPreferred", server_selection_timeout_ms=100
    )
    assert client.read_preference.mongos_mode == "secondaryPreferred"
