"""Replacements the embedded server can take: an overwrite restore of 600 changed documents and
its rollback finish with the default batch size (a bulk_write of 100 ReplaceOne upserts stalls
FerretDB 1.24 until it is restarted)."""

from __future__ import annotations

import os
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.mongo import is_ferretdb
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.sample_data import seed_database
from bmc_pipeline.engine.store import BackupStore


def test_600_replacements_and_their_rollback_finish_and_verify(
    settings: Settings, mongo_db: Any, keyring: KeyRing
) -> None:
    assert settings.restore.batch_size == 1000  # the default, not lowered for the test
    # fail within seconds rather than minutes if the server stalls
    m = settings.mongodb.model_copy(update={"socket_timeout_ms": 15_000})
    s = settings.model_copy(update={"mongodb": m})
    seed_database(mongo_db, 600, seed=17)
    store = BackupStore(s.backup_dir)
    bid = BackupEngine(s, mongo_db, store, keyring).run("full", ["conversations"]).backup_id
    mongo_db["conversations"].update_many({}, {"$set": {"status": "changed after the backup"}})

    engine = RestoreEngine(s, mongo_db, store, keyring)
    report = engine.restore(bid, "conversations", strategy="overwrite")
    assert report.overwritten == 600 and report.verified, report.verification
    assert mongo_db["conversations"].count_documents({"status": "changed after the backup"}) == 0

    undone = engine.rollback(str(report.rollback_id))
    assert undone["restored"] == 600 and undone["verified"]
    assert mongo_db["conversations"].count_documents({"status": "changed after the backup"}) == 600
    if not os.environ.get("MONGODB_URI"):  # the embedded server: it is recognised as FerretDB
        assert is_ferretdb(mongo_db["conversations"])
