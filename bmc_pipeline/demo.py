"""The README's main command: a whole backup cycle on the embedded default, end to end.

1. a database: ``MONGODB_URI`` if set, else the embedded FerretDB (built on first use), else, with
   no Go on the machine, mongomock in this one process (said loudly);
2. a key: the configured one, else a demo key file created under ``.bmc/``;
3. sample data: conversations, quotes, sessions, context, analytics and the chatbot's files;
4. a full backup (a Dagster run), then updates, inserts and deletes, then an incremental;
5. both backups validated completely, and the incremental checked against the changes made.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import audit_log_for, current_user
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError, DevServerError
from bmc_pipeline.engine.mongo import masked_uri
from bmc_pipeline.engine.sample_data import seed_database, write_files


def _step(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def _database(settings: Settings) -> Settings:
    """Settings pointing at a database that is really there."""
    from bmc_pipeline import devdb

    default_uri = f"mongodb://127.0.0.1:{settings.devdb.port}/"
    if settings.mongodb.uri not in (default_uri, default_uri.rstrip("/")):
        shown = masked_uri(settings.mongodb.uri)
        print(f"using MongoDB at {shown} (from the configuration or MONGODB_URI)")
        return settings
    tools = settings.path(settings.devdb.tools_dir)
    server = devdb.DevServer(
        devdb.ferretdb_binary(tools), settings.path(settings.devdb.data_dir), settings.devdb.port
    )
    try:
        devdb.install(tools)
        uri = server.start()
        print(
            f"embedded FerretDB {devdb.FERRETDB_VERSION} running at {uri} (stop: bmc-backup devdb stop)"
        )
        return settings
    except DevServerError as exc:
        if shutil.which("go"):
            raise
        print(f"NOTE: {exc}")
        print("NOTE: running the demo in this one process against mongomock instead (no server)")
        mongodb = settings.mongodb.model_copy(update={"uri": "mongomock://demo"})
        return settings.model_copy(update={"mongodb": mongodb})


def _key(settings: Settings) -> Settings:
    if settings.backup_key or settings.encryption.key_file:
        return settings
    from bmc_pipeline.engine.crypto import write_key_file

    path = settings.path(".bmc/demo.key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = write_key_file(path)
        print(f"no backup key configured: created demo key {key.key_id} in {path} (mode 0600)")
    else:
        print(f"no backup key configured: using the demo key in {path}")
    enc = settings.encryption.model_copy(update={"key_file": str(path)})
    return settings.model_copy(update={"encryption": enc})


def _mutate(db: Any) -> dict[str, int]:
    """Update, insert and delete some documents, as a day of chatbot traffic would."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    convs = db["conversations"]
    ids = [d["_id"] for d in convs.find({}, {"_id": 1}).sort("_id", 1).limit(400)]
    updated = ids[:100]
    deleted = ids[100:150]
    # one update_many, not 100 update_one: FerretDB's SQLite handler scans the collection per query
    convs.update_many(
        {"_id": {"$in": updated}},
        {
            "$push": {
                "messages": {
                    "role": "user",
                    "content": "¿Sigue vigente la cotización?",
                    "timestamp": now,
                    "message_id": "late-follow-up",
                }
            },
            "$set": {"updated_at": now, "status": "follow_up"},
        },
    )
    convs.delete_many({"_id": {"$in": deleted}})
    convs.insert_many(
        [
            {
                "session_id": f"sess-demo-new-{n}",
                "channel": "web",
                "status": "open",
                "messages": [
                    {
                        "role": "user",
                        "content": "Hola, ¿precio del panel de 50 mm?",
                        "timestamp": now,
                        "message_id": f"new-{n}-0",
                    }
                ],
                "created_at": now,
                "updated_at": now,
            }
            for n in range(20)
        ]
    )
    # analytics has no timestamp field configured: changes are found by content hash
    db["analytics"].delete_many({"event": "handoff_to_human", "properties.city": "Salto"})
    return {"updated": len(updated), "deleted": len(deleted), "inserted": 20}


def run_demo(settings: Settings, *, conversations: int, config_path: str | None) -> int:
    """The demo, recorded in the audit log under the key it uses (it may create the demo key,
    so the line is opened once the key is known: an unsigned line would read as forged)."""
    _step("database")
    settings = _database(settings)
    settings = _key(settings)
    with audit_log_for(settings).operation(
        actor=current_user(), via="cli", action="demo", params={"conversations": conversations}
    ):
        return _run(settings, conversations)


def _run(settings: Settings, conversations: int) -> int:
    from bmc_pipeline.launch import run_backup

    db = Deployment(settings).database()

    _step(f"seeding {conversations} conversations and the chatbot's files")
    t0 = time.monotonic()
    counts = seed_database(db, conversations, seed=42)
    files = write_files(settings.files_root, seed=42)
    print(
        ", ".join(f"{n} {c}" for c, n in counts.items())
        + f"; {len(files)} files ({time.monotonic() - t0:.1f} s)"
    )

    _step("full backup (Dagster job full_backup_job)")
    t0 = time.monotonic()
    full = run_backup(settings, "full")
    print(
        f"{full['backup_id']}: {full['size_bytes']} bytes in {time.monotonic() - t0:.1f} s -> {full['path']}"
    )
    for name, c in full["collections"].items():
        print(f"  {name:>14}: {c['documents']:>6} documents, {c['stored_bytes']:>9} bytes stored")

    _step("changing data: updates, deletes, inserts, one knowledge-base file")
    changes = _mutate(db)
    kb = settings.files_root / "conocimiento_consolidado.json"
    # a new version string every run, so that re-running the demo changes the file again
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    kb.write_text(
        kb.read_text(encoding="utf-8").replace('"2026.11"', f'"2026.11-{stamp}"'), encoding="utf-8"
    )
    analytics_now = db["analytics"].count_documents({})
    print(
        f"conversations: {changes['updated']} updated, {changes['deleted']} deleted, {changes['inserted']} inserted"
    )

    _step("incremental backup (Dagster job incremental_backup_job)")
    inc = run_backup(settings, "incremental")
    ci = inc["collections"]["conversations"]
    print(f"{inc['backup_id']}: {inc['size_bytes']} bytes")
    for name, c in inc["collections"].items():
        print(f"  {name:>14}: {c['documents']:>6} changed, {c['tombstones']:>4} tombstones")
    print(f"  {'files':>14}: {inc['filesystem']['new_blobs']} new blob(s)")

    _step("validating both backups")
    from bmc_pipeline.engine.validate import validate_backup

    deployment = Deployment(settings)
    store = deployment.store()
    keyring = deployment.keyring()
    blobs = deployment.blobs(keyring)
    ok = True
    for summary in (full, inc):
        report = validate_backup(store, store.resolve(summary["backup_id"]), keyring, blobs=blobs)
        print(
            f"  {summary['backup_id']}: {'valid' if report.ok else 'INVALID'} ({len(report.checks)} files checked)"
        )
        for e in report.errors:
            print(f"    {e}")
        ok &= report.ok

    _step("3 a.m.: someone drops the conversations collection; restore it from the chain")
    from bmc_pipeline.engine.restore import RestoreEngine

    before_drop = db["conversations"].count_documents({})
    db["conversations"].drop()
    t0 = time.monotonic()
    restored = RestoreEngine(settings, db, store, keyring).restore("latest", "conversations")
    print(
        f"restored {restored.restored} conversations from {' -> '.join(restored.chain)} in "
        f"{time.monotonic() - t0:.1f} s; rollback id {restored.rollback_id}"
    )
    for line in restored.verification:
        print(f"  {line}")

    expected = changes["updated"] + changes["inserted"]
    checks = {
        "incremental holds exactly the changed conversations": ci["documents"] == expected,
        "incremental holds exactly the deleted conversations as tombstones": ci["tombstones"]
        == changes["deleted"],
        "state count equals the collection's count": ci["state_documents"]
        == db["conversations"].count_documents({}),
        "analytics state equals the collection's count": inc["collections"]["analytics"][
            "state_documents"
        ]
        == analytics_now,
        "one changed file stored one new blob": inc["filesystem"]["new_blobs"] == 1,
        "the restore after the drop is verified (state digest equal to the backup's)": restored.verified,
        "every conversation is back": db["conversations"].count_documents({}) == before_drop,
    }
    _step("the health report (backups/health in the UI)")
    from bmc_pipeline.launch import run_health

    health = run_health(settings)
    counted = int(health["backup_runs_counted"])
    print(f"  {counted} backup run(s) counted; a row per collection in its 'collections' table")
    checks["the health report counts both backup runs"] = counted >= 2
    _step("summary")
    for what, good in checks.items():
        print(f"  {'ok  ' if good else 'FAIL'} {what}")
        ok &= good
    print(
        f"\nbackups in {settings.backup_dir}; see them with 'bmc-backup list' or in the UI ('make ui')"
    )
    if not ok:
        raise BmcError("the demo found a problem (see FAIL lines above)")
    print("demo finished: all checks passed")
    return 0
