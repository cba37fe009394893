"""Making and keeping backups: ``backup``, ``list``, ``validate``, ``export``, ``push``, ``pull``,
``delete``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import click

from bmc_pipeline.cli.options import Commands, IsoDate, json_option, print_json, run_job
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import current_user
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import EXIT_INVALID, EXIT_OK, BmcError
from bmc_pipeline.engine.export import FORMATS, export_collection, metadata_path
from bmc_pipeline.engine.remote import RemoteStore, require_remote
from bmc_pipeline.engine.store import check_backup_id
from bmc_pipeline.engine.validate import validate_backup
from bmc_pipeline.engine.vocabulary import BackupType, ScheduledBackupType, choices
from bmc_pipeline.launch import run_backup

commands = Commands()


@commands("backup", help="run a backup now (a Dagster run, visible in the UI)")
@click.option("--type", type=click.Choice(choices(ScheduledBackupType)), default="full")
@click.option("--collection", multiple=True, help="only this collection (repeatable)")
@click.option("--no-files", is_flag=True, help="do not snapshot the chatbot's files")
@json_option
def backup(
    settings: Settings, type: str, collection: tuple[str, ...], no_files: bool, json: bool
) -> int:
    summary = run_backup(
        settings,
        type,
        list(collection) or None,
        include_files=not no_files,
        launched_by=f"cli:{current_user()}",
    )
    if json:
        print_json(summary)
        return EXIT_OK
    print(f"{summary['type']} backup {summary['backup_id']}: {summary['size_bytes']} bytes")
    print(f"  manifest {summary['path']}")
    for name, c in summary["collections"].items():
        print(
            f"  {name:>14}: {c['documents']} documents, {c['tombstones']} tombstones, "
            f"{c['stored_bytes']} bytes stored; state {c['state_documents']} documents"
        )
    fs = summary["filesystem"]
    print(
        f"  {'files':>14}: {fs['files']} files, {fs['new_blobs']} new blobs ({fs['new_bytes']} bytes)"
    )
    return EXIT_OK


def remote_of(settings: Settings) -> RemoteStore:
    return require_remote(Deployment(settings).remote())


@commands("list", help="list backups, newest first")
@click.option("--type", type=click.Choice(choices(BackupType)))
@click.option("--limit", type=int, default=50)
@click.option("--date-from", type=IsoDate())
@click.option("--date-to", type=IsoDate())
@click.option("--remote", is_flag=True, help="what the remote store holds")
@json_option
def list_backups(
    settings: Settings,
    type: str | None,
    limit: int,
    date_from: date | None,
    date_to: date | None,
    remote: bool,
    json: bool,
) -> int:
    d = Deployment(settings)
    if remote:
        there = remote_of(settings)
        local = {r.backup_id for r in d.store().refs()}
        ids = list(reversed(there.backup_ids()))[:limit]
        found = [{"backup_id": b, "local_copy": b in local} for b in ids]
        if json:
            print_json({"url": there.url, "backups": found, "count": len(found)})
            return EXIT_OK
        print(f"at {there.url}:" if found else f"no backups at {there.url}")
        for row in found:
            note = "" if row["local_copy"] else "(not here: bmc-backup pull)"
            print(f"{row['backup_id']}  {note}")
        return EXIT_OK
    store = d.store()
    keyring = d.keyring_if_any()  # without a key, manifests are listed unauthenticated
    refs = list(reversed(store.refs(backup_type=type, date_from=date_from, date_to=date_to)))
    rows: list[dict[str, Any]] = [store.describe(ref, keyring) for ref in refs[:limit]]
    if json:
        print_json({"backups": rows, "count": len(rows)})
        return EXIT_OK
    if not rows:
        print(f"no backups in {store.root}")
    for r in rows:
        if "error" in r:
            print(f"{r['backup_id']}  {r['type']:<11}  ERROR {r['error']}")
            continue
        docs = sum(r["collections"].values())
        print(
            f"{r['backup_id']}  {r['type']:<11}  {len(r['collections'])} collections  "
            f"{docs:>8} documents  {r['files']:>3} files  {r['size_bytes']:>11} bytes"
        )
    return EXIT_OK


@commands("push", help="copy backups to the remote store (storage.remote_url)")
@click.argument("backup_id", nargs=-1)
@click.option("--all", "all", is_flag=True, help="every local backup not yet there")
@json_option
def push(settings: Settings, backup_id: tuple[str, ...], all: bool, json: bool) -> int:
    remote_of(settings)  # no remote configured: said before a run starts
    if not backup_id and not all:
        print("give backup ids, or --all for every backup not yet copied")
        return EXIT_OK
    config = {"action": "push", "backup_ids": list(backup_id), "all": all}
    out = run_job(settings, "storage_job", config, quiet=json).output
    results: list[dict[str, Any]] = out["pushed"]
    segments = out.get("capture", {}).get("segments_pushed", 0)
    if json:
        print_json({"pushed": results, "capture_segments_pushed": segments})
        return EXIT_OK
    if segments:
        print(f"{segments} capture segment(s) -> {out['remote_url']}")
    if not results:
        print(f"nothing to copy: every local backup is at {out['remote_url']}")
        return EXIT_OK
    for r in results:
        print(
            f"{r['backup_id']} -> {out['remote_url']}: {r['uploaded_files']} file(s), "
            f"{r['uploaded_bytes']} bytes uploaded, {r['already_there']} already there"
        )
    return EXIT_OK


@commands(
    "pull",
    help="fetch a backup (or with --all every one not here) from the remote store and validate it",
)
@click.argument("backup_id", required=False)
@click.option("--all", "all", is_flag=True, help="every remote backup not here (a new machine)")
@json_option
def pull(settings: Settings, backup_id: str | None, all: bool, json: bool) -> int:
    remote_of(settings)  # no remote configured: said before a run starts
    if not all and not backup_id:
        raise BmcError("give a backup id ('bmc-backup list --remote' shows them), or --all")
    config = {"action": "pull", "backup_ids": [backup_id] if backup_id else [], "all": all}
    out = run_job(settings, "storage_job", config, quiet=json).output
    rows: list[dict[str, Any]] = out["pulled"]
    if json:
        print_json(
            rows[0]
            if backup_id and not all
            else {"pulled": rows, "count": len(rows),
                  "capture_segments_pulled": out.get("capture", {}).get("segments_pulled", 0)}
        )  # fmt: skip
    elif all and not rows:
        print(f"nothing to fetch: every backup at {out['remote_url']} is already in {out['store']}")
    else:
        for row in rows:
            state = "valid" if row["ok"] else "INVALID: " + "; ".join(row["errors"])
            print(
                f"fetched {row['backup_id']} from {out['remote_url']} into {out['store']}: {state}"
            )
    if not json and out.get("capture", {}).get("segments_pulled"):
        print(f"fetched {out['capture']['segments_pulled']} capture segment(s)")
    return EXIT_OK if not [r for r in rows if not r["ok"]] else EXIT_INVALID


@commands("delete", help="delete one backup (retention guards apply)")
@click.argument("backup_id")
@click.option("--confirm", required=True, help="the same backup id again")
@json_option
def delete(settings: Settings, backup_id: str, confirm: str, json: bool) -> int:
    check_backup_id(backup_id)  # an exact id: never 'latest' for something this final
    if confirm != backup_id:
        raise BmcError(
            f"deleting is permanent: repeat the backup id to confirm "
            f"(bmc-backup delete {backup_id} --confirm {backup_id})"
        )
    config = {"action": "delete", "backup_ids": [backup_id]}
    out = run_job(settings, "storage_job", config, quiet=json).output
    result = {k: v for k, v in out.items() if k != "remote"}
    if json:
        print_json(result)
    else:
        also = " (and its remote copy)" if out["remote"] else ""
        print(f"deleted backup {result['backup_id']}{also}")
    return EXIT_OK


@commands("validate", help="verify a backup completely (exit 0 only if intact)")
@click.argument("backup_id")
@json_option
def validate(settings: Settings, backup_id: str, json: bool) -> int:
    d = Deployment(settings)
    store, keyring = d.store(), d.keyring()
    ref = store.resolve(backup_id)
    report = validate_backup(store, ref, keyring, blobs=d.blobs(keyring))
    if json:
        print_json(report.as_dict())
    else:
        for c in report.checks:
            mark = "ok  " if c.ok else "FAIL"
            extra = f" ({c.documents} documents)" if c.documents is not None else ""
            print(f"{mark} {c.file}{extra}" + (f": {c.error}" if c.error else ""))
        print(f"backup {ref.backup_id}: {'valid' if report.ok else 'INVALID'}")
    return EXIT_OK if report.ok else EXIT_INVALID


@commands("export", help="write one collection of a backup as BSON or Extended JSON")
@click.argument("backup_id")
@click.option("--collection", required=True)
@click.option("--format", type=click.Choice(list(FORMATS)), default="bson")
@click.option("--out", required=True)
def export(settings: Settings, backup_id: str, collection: str, format: str, out: str) -> int:
    d = Deployment(settings)
    store = d.store()
    ref = store.resolve(backup_id)
    n = export_collection(store, ref, d.keyring(), collection, format, Path(out))
    print(f"wrote {n} documents of {collection} from {ref.backup_id} to {out} ({format})")
    if format == "bson":
        print(f"  options and indexes in {metadata_path(Path(out))} (as mongodump writes them)")
    return EXIT_OK
