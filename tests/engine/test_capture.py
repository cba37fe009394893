"""Continuous capture against FerretDB's emulated oplog: a real `bmc-backup capture` process,
stopped by SIGTERM and killed by SIGKILL, restores to a second, lost history, and incrementals
built from segments."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import DevServer, ephemeral_server, ferretdb_binary, installed_version
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.capture.segments import CaptureStore
from bmc_pipeline.engine.crypto import Key, KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BackupNotFoundError
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters, RestoreOptions
from bmc_pipeline.engine.sample_data import seed_database
from tests.support import ROOT, make_settings, write_config

COLL = "conversations"


@pytest.fixture(scope="module")
def oplog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    binary = ferretdb_binary(ROOT / ".tools")
    if installed_version(binary) is None:
        pytest.skip("FerretDB is not built: run 'make setup'")
    with ephemeral_server(binary, tmp_path_factory.mktemp("oplog"), oplog=True) as server:
        yield server


@pytest.fixture
def cap(tmp_path: Path, oplog_server: DevServer, db_name: str, key: Key) -> Iterator[Settings]:
    s = make_settings(tmp_path, oplog_server.uri, db_name, key)
    s = s.model_copy(update={"collections": {COLL: s.collections[COLL]}})
    yield s
    MongoClient(oplog_server.uri).drop_database(db_name)


class Capture:
    """`bmc-backup capture` as a child process, as systemd would run it."""

    def __init__(self, settings: Settings, tmp: Path, key: Key) -> None:
        self.config = write_config(settings, tmp / "capture_config.json")
        self.env = {
            **os.environ,
            "BMC_BACKUP_KEY": base64.b64encode(key.material).decode(),
            "DAGSTER_HOME": str(tmp / "dagster"),
        }
        self.proc: subprocess.Popen[str] | None = None
        self.capture = CaptureStore(Deployment(settings).store(), KeyRing([key]))

    def start(self) -> None:
        launched = datetime.now(timezone.utc)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bmc_pipeline.cli", "--config", str(self.config), "capture",
             "--segment-seconds", "1", "--json"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.wait_for(
            lambda pos: pos is not None and pos.updated > launched, "capture to save its position"
        )

    def wait_for(self, check: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self.capture.position()):
                return
            assert self.proc is None or self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def caught_up(self, after: datetime) -> None:
        """Wait until the covered range reaches past ``after`` (everything before it sealed)."""
        self.wait_for(
            lambda pos: pos is not None and pos.recoverable_until > after,
            f"capture to cover {after.isoformat()}",
        )

    def stop(self, sig: int = signal.SIGTERM) -> dict[str, Any] | None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        code = self.proc.returncode
        self.proc = None
        if sig == signal.SIGKILL:
            return None
        assert code == 0, err
        result: dict[str, Any] = json.loads(out)
        return result


def docs(coll: Any) -> dict[Any, Any]:
    return {d["_id"]: d for d in coll.find()}


def restore_at(s: Settings, key: Key, when: datetime, target: str) -> Any:
    dep = Deployment(s)
    engine = RestoreEngine(s, dep.database(), dep.store(), KeyRing([key]))
    opts = RestoreOptions(
        backup_id="latest",
        collection=COLL,
        target_collection=target,
        strategy="overwrite",
        filters=RestoreFilters(point_in_time=when),
    )
    return engine.run(opts)


def conversation(i: int, text: str = "hola") -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {"_id": f"c{i:05d}", "session_id": f"s{i}", "text": text, "created_at": now,
            "updated_at": now, "messages": [{"message_id": "m1", "text": text}]}  # fmt: skip


def full_backup(s: Settings, key: Key) -> Any:
    dep = Deployment(s)
    return BackupEngine(s, dep.database(), dep.store(), KeyRing([key])).run(
        "full", [COLL], include_files=False
    )


def captured_from_a_full(
    cap: Settings, key: Key, tmp_path: Path, conversations: int
) -> tuple[Any, Any, Capture]:
    """``conversations`` written, a full backup of them, then capture started."""
    db = Deployment(cap).database()
    db[COLL].insert_many([conversation(i) for i in range(conversations)])
    full_backup(cap, key)
    capture = Capture(cap, tmp_path, key)
    capture.start()
    return db, db[COLL], capture


def test_restore_to_a_second_equals_that_state(cap: Settings, key: Key, tmp_path: Path) -> None:
    db, coll, capture = captured_from_a_full(cap, key, tmp_path, 40)
    # changes at t1
    coll.insert_one(conversation(100, "new at t1"))
    coll.update_one({"_id": "c00001"}, {"$set": {"text": "edited at t1"}})
    coll.delete_one({"_id": "c00002"})
    time.sleep(2.0)
    at_t = datetime.now(timezone.utc)  # T: two seconds after t1
    state_t = docs(coll)
    time.sleep(1.0)
    # more changes after T: insert, update, delete
    coll.insert_one(conversation(101, "after T"))
    coll.update_one({"_id": "c00003"}, {"$set": {"text": "edited after T"}})
    coll.delete_one({"_id": "c00004"})
    coll.delete_one({"_id": "c00100"})
    final = docs(coll)
    capture.caught_up(datetime.now(timezone.utc))
    summary = capture.stop()
    assert summary is not None and summary["changes"] >= 7 and summary["segments_sealed"] >= 1

    report = restore_at(cap, key, at_t, "at_t")
    assert report.verified, report.verification
    assert report.replay is not None and report.replay["to"] == at_t.isoformat()
    assert docs(db["at_t"]) == state_t
    until = datetime.fromisoformat(summary["recoverable_until"])
    report = restore_at(cap, key, until, "at_now")  # "now": the newest recoverable second
    assert report.verified, report.verification
    assert docs(db["at_now"]) == final
    again = restore_at(cap, key, at_t, "at_t")  # replaying twice changes nothing
    assert again.inserted == again.overwritten == again.deleted == 0
    assert docs(db["at_t"]) == state_t

    with pytest.raises(BackupNotFoundError, match="newest recoverable time"):
        restore_at(cap, key, until.replace(year=until.year + 1), "too_late")


def test_sigkill_between_segments_loses_nothing(cap: Settings, key: Key, tmp_path: Path) -> None:
    db, coll, capture = captured_from_a_full(cap, key, tmp_path, 20)
    coll.update_one({"_id": "c00005"}, {"$set": {"text": "before the kill"}})
    capture.caught_up(datetime.now(timezone.utc))  # sealed
    coll.insert_one(conversation(200, "read or not when killed"))
    coll.delete_one({"_id": "c00006"})
    capture.stop(signal.SIGKILL)  # between two seals: what it held unsealed is gone with it
    coll.update_one({"_id": "c00007"}, {"$set": {"text": "while capture was down"}})
    capture.start()
    coll.insert_one(conversation(201, "after the restart"))
    capture.caught_up(datetime.now(timezone.utc))
    summary = capture.stop()
    assert summary is not None and summary["gaps"] == []
    report = restore_at(
        cap, key, datetime.fromisoformat(summary["recoverable_until"]), "after_kill"
    )
    assert report.verified, report.verification
    assert docs(db["after_kill"]) == docs(coll)


def test_lost_history_is_a_gap_alerted_once_and_refused(
    cap: Settings, key: Key, tmp_path: Path, oplog_server: DevServer
) -> None:
    _, coll, capture = captured_from_a_full(cap, key, tmp_path, 10)
    capture.caught_up(datetime.now(timezone.utc))
    before_gap = capture.stop()
    assert before_gap is not None
    covered_until = datetime.fromisoformat(before_gap["recoverable_until"])
    coll.insert_one(conversation(300, "lost with the trimmed oplog"))
    time.sleep(1.1)
    in_gap = datetime.now(timezone.utc)
    # the oplog trimmed past the resume point while capture was stopped
    oplog = MongoClient(oplog_server.uri)["local"]["oplog.rs"]
    oplog.delete_many({})
    coll.insert_one(conversation(301, "after the trim"))
    capture.start()
    capture.stop()
    capture.start()  # a second start must not alert again
    summary = capture.stop()
    assert summary is not None and len(summary["gaps"]) == 1
    gap = summary["gaps"][0]
    assert datetime.fromisoformat(gap["after"]) == covered_until
    alerts = [json.loads(line) for line in Path(cap.alerts.log_file).read_text().splitlines()]
    assert [a["key"] for a in alerts if a["key"] == "capture-gap"] == ["capture-gap"]
    position = capture.capture.position()
    assert position is not None and position.full_requested is not None
    with pytest.raises(BackupNotFoundError, match=r"Captured: .* to .*, .* to") as refused:
        restore_at(cap, key, in_gap, "in_gap")
    assert "history lost between" in str(refused.value)
    assert "falls in a gap" in str(refused.value)


def test_standalone_server_is_refused_naming_what_to_enable(
    settings: Settings, key: Key, tmp_path: Path
) -> None:
    config = write_config(settings, tmp_path / "standalone.json")
    env = {**os.environ, "BMC_BACKUP_KEY": base64.b64encode(key.material).decode(),
           "DAGSTER_HOME": str(tmp_path / "dagster")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bmc_pipeline.cli", "--config", str(config), "capture"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        "standalone" in done.stderr
        and "--replSet" in done.stderr
        and "rs.initiate()" in done.stderr
    )


class ReadCounter(monitoring.CommandListener):
    """Counts the commands that read documents of one collection."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.reads: list[str] = []
        self.cursors: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        cmd = event.command
        name = event.command_name
        if (
            name in ("find", "aggregate", "count", "distinct") and cmd.get(name) == self.collection
        ) or (name == "getMore" and cmd.get("collection") == self.collection):
            self.reads.append(name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_incrementals_cost_what_changed(
    cap: Settings, key: Key, tmp_path: Path, oplog_server: DevServer
) -> None:
    db = Deployment(cap).database()
    seed_database(db, 3000, 7)
    coll = db[COLL]
    full = full_backup(cap, key)
    full_bytes = full.collections[COLL].documents.stored_bytes
    ids = [d["_id"] for d in coll.find({}, {"_id": 1}).limit(30)]  # 1 % of 3,000

    def change(tag: str) -> None:
        for i in ids[:28]:
            coll.update_one(
                {"_id": i}, {"$set": {"updated_at": datetime.now(timezone.utc), "tag": tag}}
            )
        coll.delete_one({"_id": ids[28] if tag == "scan" else ids[29]})

    # without capture: the timestamp query and the id listing
    change("scan")
    dep = Deployment(cap)
    scanned = BackupEngine(cap, db, dep.store(), KeyRing([key])).run(
        "incremental", [COLL], include_files=False
    )
    entry = scanned.manifest.collections[COLL]
    assert entry.change_detection == "timestamp" and entry.index is None
    inc_bytes = entry.documents.stored_bytes + (
        entry.tombstones.stored_bytes if entry.tombstones else 0
    )
    assert inc_bytes <= 0.1 * full_bytes, (inc_bytes, full_bytes)
    assert scanned.collections[COLL].state.count == 2999

    # with capture covering the interval: no document of the collection is read
    capture = Capture(cap, tmp_path, key)
    capture.start()
    change("captured")
    capture.caught_up(datetime.now(timezone.utc))
    capture.stop()
    counter = ReadCounter(COLL)
    client: MongoClient[Any] = MongoClient(oplog_server.uri, event_listeners=[counter])
    from_segments = BackupEngine(cap, client[db.name], dep.store(), KeyRing([key])).run(
        "incremental", [COLL], include_files=False
    )
    entry = from_segments.manifest.collections[COLL]
    assert entry.change_detection == "capture"
    assert counter.reads == []
    assert entry.documents.documents == 28 and entry.tombstones is not None
    assert entry.tombstones.documents == 1
    # the chain it ends restores to exactly the collection, and to the state digest it
    # carried forward from its parent's without reading the collection
    report = RestoreEngine(cap, db, dep.store(), KeyRing([key])).restore(
        from_segments.backup_id, COLL, target_collection="from_segments"
    )
    assert report.verified, report.verification
    assert docs(db["from_segments"]) == docs(coll)
