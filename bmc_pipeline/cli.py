"""``bmc-backup``: the command line.

Each command parses its arguments, calls the engine (or a Dagster job, for backups, so the run is
in the UI's history) and reports: a short human text by default, JSON with ``--json``. Engine
errors become one line on stderr and an exit code per error type (see docs/CLI.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.engine.crypto import KeyRing, new_key_text, write_key_file
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.export import FORMATS, export_collection
from bmc_pipeline.engine.store import BackupStore
from bmc_pipeline.engine.validate import validate_backup
from bmc_pipeline.progress import ProgressBar


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def _store(settings: Settings) -> BackupStore:
    return Deployment(settings).store()


def _keyring(settings: Settings) -> KeyRing:
    return Deployment(settings).keyring()


def _keyring_if_any(settings: Settings) -> KeyRing | None:
    """The key ring, or None where none is configured (for commands that can do without)."""
    return Deployment(settings).keyring_if_any()


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-25") from None


# -- commands ------------------------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    if not args.out:
        print(new_key_text())
        print(
            "# a new backup key; put it in BMC_BACKUP_KEY (or a 0600 key file) and keep a copy "
            "somewhere safe: backups cannot be read without it",
            file=sys.stderr,
        )
        return 0
    key = write_key_file(args.out, add=args.add)
    print(f"wrote key {key.key_id} to {args.out} (mode 0600); set BMC_BACKUP_KEY_FILE={args.out}")
    print("keep a copy of this file outside this machine: backups cannot be read without it")
    return 0


def cmd_devdb(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline import devdb

    tools = settings.path(settings.devdb.tools_dir)
    server = devdb.DevServer(
        devdb.ferretdb_binary(tools), settings.path(settings.devdb.data_dir), settings.devdb.port
    )
    if args.action == "install":
        devdb.install(tools)
    elif args.action == "start":
        devdb.install(tools)
        print(f"FerretDB running at {server.start()} (data in {server.data_dir})")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    else:
        st = server.status()
        if args.json:
            _print_json(st)
        else:
            print(
                f"{'running' if st['running'] else 'stopped'}: {st['uri']} (data {st['data_dir']})"
            )
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.sample_data import seed_database, write_files

    db = Deployment(settings).database()
    counts = seed_database(db, args.conversations, args.seed)
    files = [] if args.no_files else write_files(settings.files_root, args.seed)
    if args.json:
        _print_json({"collections": counts, "files": [str(f) for f in files]})
    else:
        for name, n in counts.items():
            print(f"{name:>14}: {n} documents")
        if files:
            print(f"{len(files)} files written under {settings.files_root}")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.audit import current_user
    from bmc_pipeline.launch import run_backup

    summary = run_backup(
        settings,
        args.type,
        args.collection,
        include_files=not args.no_files,
        launched_by=f"cli:{current_user()}",
    )
    if args.json:
        _print_json(summary)
    else:
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
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.remote:
        remote = _remote(settings)
        local = {r.backup_id for r in _store(settings).refs()}
        ids = list(reversed(remote.backup_ids()))[: args.limit]
        rows = [{"backup_id": b, "local_copy": b in local} for b in ids]
        if args.json:
            _print_json({"url": remote.url, "backups": rows, "count": len(rows)})
        else:
            print(f"at {remote.url}:" if rows else f"no backups at {remote.url}")
            for r in rows:
                print(
                    f"{r['backup_id']}  {'' if r['local_copy'] else '(not here: bmc-backup pull)'}"
                )
        return 0
    store = _store(settings)
    keyring = _keyring_if_any(settings)  # without a key, manifests are listed unauthenticated
    refs = store.refs(backup_type=args.type, date_from=args.date_from, date_to=args.date_to)
    refs = list(reversed(refs))[: args.limit]
    rows = [store.describe(ref, keyring) for ref in refs]
    if args.json:
        _print_json({"backups": rows, "count": len(rows)})
        return 0
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
    return 0


def _remote(settings: Settings) -> Any:
    remote = Deployment(settings).remote()
    if remote is None:
        raise BmcError(
            "no remote copy is configured: set storage.remote_url in backup_config.json "
            "(or BMC_REMOTE_URL), e.g. s3://bucket/bmc-backups or file:///mnt/nas/bmc"
        )
    return remote


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    remote = _remote(settings)
    store, keyring = _store(settings), _keyring(settings)
    if args.all:
        there = set(remote.backup_ids())
        ids = [r.backup_id for r in store.refs() if r.backup_id not in there]
    else:
        ids = [store.resolve(b).backup_id for b in args.backup_id]
    if not ids:
        print(
            f"nothing to copy: every local backup is at {remote.url}"
            if args.all
            else "give backup ids, or --all for every backup not yet copied"
        )
        return 0
    results = []
    for bid in ids:
        r = remote.push(store, store.ref(bid), keyring).as_dict()
        results.append(r)
        if not args.json:
            print(
                f"{bid} -> {remote.url}: {r['uploaded_files']} file(s), {r['uploaded_bytes']} "
                f"bytes uploaded, {r['already_there']} already there"
            )
    if args.json:
        _print_json({"pushed": results})
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    remote = _remote(settings)
    store, keyring = _store(settings), _keyring(settings)
    ref = remote.pull(store, args.backup_id, keyring)
    report = validate_backup(store, ref, keyring, blobs=Deployment(settings).blobs(keyring))
    if args.json:
        _print_json(
            {"backup_id": ref.backup_id, "path": str(ref.manifest_path), **report.as_dict()}
        )
    else:
        state = "valid" if report.ok else "INVALID: " + "; ".join(report.errors)
        print(f"fetched {ref.backup_id} from {remote.url} into {store.root}: {state}")
    return 0 if report.ok else 5


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.retention import delete_backup
    from bmc_pipeline.engine.store import check_backup_id

    check_backup_id(args.backup_id)  # an exact id: never 'latest' for something this final
    if args.confirm != args.backup_id:
        raise BmcError(
            f"deleting is permanent: repeat the backup id to confirm "
            f"(bmc-backup delete {args.backup_id} --confirm {args.backup_id})"
        )
    d = Deployment(settings)
    result = delete_backup(d.store(), d.keyring(), args.backup_id, d.remote())
    if args.json:
        _print_json(result)
    else:
        print(
            f"deleted backup {result['backup_id']}"
            + (" (and its remote copy)" if d.remote() else "")
        )
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    keyring = _keyring(settings)
    ref = store.resolve(args.backup_id)
    report = validate_backup(store, ref, keyring, blobs=Deployment(settings).blobs(keyring))
    if args.json:
        _print_json(report.as_dict())
    else:
        for c in report.checks:
            mark = "ok  " if c.ok else "FAIL"
            extra = f" ({c.documents} documents)" if c.documents is not None else ""
            print(f"{mark} {c.file}{extra}" + (f": {c.error}" if c.error else ""))
        print(f"backup {ref.backup_id}: {'valid' if report.ok else 'INVALID'}")
    return 0 if report.ok else 5


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    keyring = _keyring(settings)
    ref = store.resolve(args.backup_id)
    n = export_collection(store, ref, keyring, args.collection, args.format, Path(args.out))
    print(
        f"wrote {n} documents of {args.collection} from {ref.backup_id} to {args.out} ({args.format})"
    )
    return 0


def _restore_engine(settings: Settings, *, quiet: bool) -> Any:
    from bmc_pipeline.engine.restore import RestoreEngine

    def log(msg: str) -> None:
        if not quiet:
            print(f"... {msg}", file=sys.stderr, flush=True)

    d = Deployment(settings)
    return RestoreEngine(settings, d.database(), d.store(), d.keyring(), log=log)


def _print_restore_report(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        _print_json(report)
        return
    what = "would restore" if report["dry_run"] else "restored"
    print(
        f"{what} {report['restored']} documents of {report['collection']} into "
        f"{report['target_collection']} from {report['backup_id']} "
        f"(chain: {' -> '.join(report['chain']) or 'file'})"
    )
    print(
        f"  inserted {report['inserted']}, overwritten {report['overwritten']}, merged "
        f"{report['merged']}, skipped {report['skipped']} ({report['unchanged']} unchanged), "
        f"invalid {report['invalid']}, deleted {report['deleted']}, "
        f"filtered out {report['filtered_out']}"
    )
    for action, ids in report["samples"].items():
        print(f"  e.g. {action}: {', '.join(ids)}")
    for e in report["errors"][:10]:
        print(f"  invalid: {e}")
    if report["quarantine_file"]:
        print(f"  invalid documents saved to {report['quarantine_file']}")
    if report["rollback_id"]:
        print(f"  undo with: bmc-backup rollback {report['rollback_id']}")
    print(f"  verified: {report['verified']} ({'; '.join(report['verification'])})")


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.restore import (
        RestoreFilters,
        check_query,
        parse_time,
        resolve_source,
    )

    filters = RestoreFilters(
        date_from=parse_time(args.date_from, "--date-from"),
        date_to=parse_time(args.date_to, "--date-to"),
        session_ids=args.session_id,
        point_in_time=parse_time(args.point_in_time, "--point-in-time"),
        drop_deleted=args.drop,
        query=check_query(args.query) if args.query else None,
    )
    engine = _restore_engine(settings, quiet=args.json)
    backup_id, legacy = resolve_source(engine.store, args.backup_id, args.collection)
    report = engine.restore(
        backup_id,
        args.collection,
        target_collection=args.target_collection,
        strategy=args.strategy or settings.restore.default_strategy,
        filters=filters,
        dry_run=args.dry_run,
        fail_fast=args.fail_fast,
        legacy_documents=legacy,
    ).as_dict()
    _print_restore_report(report, as_json=args.json)
    if report["dry_run"]:
        return 0
    return 0 if report["verified"] else 8


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    result = _restore_engine(settings, quiet=args.json).rollback(args.rollback_id)
    if args.json:
        _print_json(result)
    else:
        print(
            f"rolled back {result['collection']}: {result['deleted']} inserted documents removed, "
            f"{result['restored']} previous versions put back; verified: {result['verified']} "
            f"({result['verification']})"
        )
    return 0 if result["verified"] else 8


def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.scanner import scan_settings, write_reports

    sc = settings.scanner
    db = Deployment(settings).database() if args.source in ("mongodb", "all") else None

    def log(msg: str) -> None:
        if not args.json:
            print(f"... {msg}", file=sys.stderr, flush=True)

    report = scan_settings(
        settings,
        source=args.source,
        collection=args.collection,
        root=Path(args.root) if args.root else None,
        db=db,
        keyring=_keyring_if_any(settings),
        log=log,
        progress=None if args.json else ProgressBar("reading files"),
    )
    out_dir = Path(args.output_dir) if args.output_dir else settings.path(sc.output_dir)
    json_path, md_path = write_reports(report, out_dir)
    if args.json:
        _print_json({**report.as_dict(), "report_files": [str(json_path), str(md_path)]})
        return 0
    for k, v in report.summary.items():
        print(f"{k.replace('_', ' '):>26}: {v}")
    for r in report.recommendations:
        print(f"- {r}")
    print(f"reports: {json_path} and {md_path}")
    return 0


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.scanner import recoverable_documents

    report_path = Path(args.from_scan)
    engine = _restore_engine(settings, quiet=args.json)
    missing: list[str] = []
    result = engine.restore(
        f"file:{report_path.name}",
        "conversations",
        target_collection=args.target_collection,
        strategy=args.strategy or settings.restore.default_strategy,
        dry_run=args.dry_run,
        legacy_documents=recoverable_documents(report_path, _keyring_if_any(settings), missing),
    ).as_dict()
    result["not_found"] = missing
    _print_restore_report(result, as_json=args.json)
    if missing and not args.json:
        print(
            f"warning: {len(missing)} conversation(s) of the report were not recovered, because "
            "they are no longer found as the scan saw them; scan again to see what is there now:",
            file=sys.stderr,
        )
        for line in missing[:10]:
            print(f"  {line}", file=sys.stderr)
        if len(missing) > 10:
            print(f"  ... and {len(missing) - 10} more (all are in --json output)", file=sys.stderr)
    if result["dry_run"]:
        return 0
    return 0 if result["verified"] else 8


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.retention import RetentionPolicy, rotate

    r = settings.retention
    d = Deployment(settings)
    result = rotate(
        d.store(),
        d.keyring(),
        RetentionPolicy(daily=r.daily, weekly=r.weekly, monthly=r.monthly),
        dry_run=args.dry_run,
        grace_s=r.blob_grace_hours * 3600,
        log=lambda m: None if args.json else print(f"... {m}", file=sys.stderr),
        remote=d.remote(),
    )
    if args.json:
        _print_json(result.as_dict())
        return 0
    for dec in result.decisions:
        what = "keep  " if dec.keep else ("WOULD DELETE" if args.dry_run else "deleted")
        print(f"{what} {dec.backup_id}  {'; '.join(dec.reasons)}")
    for u in result.unreadable:
        print(f"keep   {u} (manifest unreadable: never deleted)")
    verb = "would free" if args.dry_run else "freed"
    print(
        f"{len(result.deleted)} backup(s) {'would be ' if args.dry_run else ''}deleted; "
        f"{result.blobs_deleted} unreferenced file blob(s), {verb} {result.blob_bytes_freed} bytes"
    )
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.health import health_markdown
    from bmc_pipeline.jobs.history import health_now

    h = health_now(settings)
    if args.json:
        _print_json(h)
    else:
        print(health_markdown(h))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.demo import run_demo

    return run_demo(settings, conversations=args.conversations, config_path=args.config)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.api.serve import build_server

    server, url = build_server(
        settings,
        host=args.host,
        port=args.port,
        cert=args.cert,
        key=args.key,
        allow_plain_http=args.allow_plain_http,
    )
    print(f"recovery API on {url}/api/recovery (OpenAPI at {url}/api/docs); Ctrl-C stops it")
    server.run()
    return 0


def cmd_api_token(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.api.tokens import TokenStore

    store = TokenStore.for_settings(settings)
    if args.action == "create":
        if not args.name:
            raise BmcError("give the token a name with --name (the audit log records it)")
        secret, token = store.create(args.name, args.role)
        if args.json:
            _print_json({"name": token.name, "role": token.role, "token": secret})
        else:
            print(f"token {token.name} ({token.role}) added to {store.path}")
            print("the token (shown only now; the file keeps its hash):")
            print(secret)
            if args.print_hash:
                print(f"for BMC_API_TOKENS: {token.name}:{token.role}:{token.sha256}")
    elif args.action == "list":
        rows = [
            {"name": t.name, "role": t.role, "created": t.created, "source": t.source}
            for t in store.tokens()
        ]
        if args.json:
            _print_json({"tokens": rows})
        for r in [] if args.json else rows:
            print(f"{r['name']:<24} {r['role']:<7} {r['source']:<5} {r['created']}")
    else:
        if not args.name:
            raise BmcError("name the token to revoke with --name")
        if not store.revoke(args.name):
            raise BmcError(f"no token named {args.name!r} in {store.path} ('api-token list')")
        print(f"token {args.name} revoked")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.engine.audit import audit_log_for

    result = audit_log_for(settings).verify()
    if args.json:
        _print_json(result.as_dict())
    else:
        if result.ok:
            print(f"{result.path}: {result.lines} line(s), chain intact")
        else:
            print(f"{result.path}: TAMPERED at line {result.line}: {result.message}")
        print(
            f"  MACs verified: {result.macs_verified}, lines without a MAC: {result.unkeyed}, "
            f"MACs under keys not configured here: {result.unverifiable_macs}"
        )
        for w in result.warnings:
            print(f"  warning: {w}")
    return 0 if result.ok else 5


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bmc_pipeline.doctor import run_doctor

    report = run_doctor(settings)
    if args.json:
        _print_json(report)
    else:
        for c in report["checks"]:
            print(f"{c['status'].upper():<4} {c['name']}: {c['message']}")
            if c["fix"] and c["status"] != "ok":
                print(f"     fix: {c['fix']}")
        print("all checks passed" if report["ok"] else "some checks FAILED")
    return 0 if report["ok"] else 1


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bmc-backup",
        description="Backup and recovery for the bmc-cotizaciones database and the chatbot's files.",
    )
    p.add_argument(
        "--config", help="path of backup_config.json (default: $BMC_CONFIG or ./backup_config.json)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("keygen", help="create a backup key")
    s.add_argument("--out", help="write it to this file with mode 0600 (else print it)")
    s.add_argument(
        "--add", action="store_true", help="rotate: put a new key first in an existing key file"
    )
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("devdb", help="the embedded MongoDB-compatible server (FerretDB)")
    s.add_argument("action", choices=["install", "start", "stop", "status"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_devdb)

    s = sub.add_parser("seed", help="write the sample data set into the database and files root")
    s.add_argument("--conversations", type=int, default=1000)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--no-files", action="store_true", help="do not write the chatbot's files")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_seed)

    s = sub.add_parser("backup", help="run a backup now (a Dagster run, visible in the UI)")
    s.add_argument("--type", choices=["full", "incremental"], default="full")
    s.add_argument("--collection", action="append", help="only this collection (repeatable)")
    s.add_argument("--no-files", action="store_true", help="do not snapshot the chatbot's files")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_backup)

    s = sub.add_parser("list", help="list backups, newest first")
    s.add_argument("--type", choices=["full", "incremental", "rollback"])
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--date-from", type=_date)
    s.add_argument("--date-to", type=_date)
    s.add_argument("--remote", action="store_true", help="what the remote store holds")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("push", help="copy backups to the remote store (storage.remote_url)")
    s.add_argument("backup_id", nargs="*", help="backup ids (or 'latest')")
    s.add_argument("--all", action="store_true", help="every local backup not yet there")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_push)

    s = sub.add_parser("pull", help="fetch a backup from the remote store and validate it")
    s.add_argument("backup_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_pull)

    s = sub.add_parser("delete", help="delete one backup (retention guards apply)")
    s.add_argument("backup_id")
    s.add_argument("--confirm", required=True, help="the same backup id again")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_delete)

    s = sub.add_parser("validate", help="verify a backup completely (exit 0 only if intact)")
    s.add_argument("backup_id", help="a backup id, or 'latest'")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("export", help="write one collection of a backup as BSON or Extended JSON")
    s.add_argument("backup_id")
    s.add_argument("--collection", required=True)
    s.add_argument("--format", choices=FORMATS, default="bson")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("restore", help="restore a collection from a backup (or a JSON file)")
    s.add_argument(
        "backup_id", help="a backup id, 'latest', a manifest path, or a legacy JSON file"
    )
    s.add_argument("--collection", required=True, help="the collection in the backup")
    s.add_argument("--target-collection", help="restore into this collection instead")
    s.add_argument(
        "--strategy", choices=["skip_duplicates", "overwrite", "merge", "timestamp_based"]
    )
    s.add_argument("--dry-run", action="store_true", help="plan only: write nothing")
    s.add_argument("--session-id", action="append", help="only this session (repeatable)")
    s.add_argument(
        "--query",
        help='only documents matching this MongoDB query (JSON), e.g. \'{"status": "open"}\'; '
        "comparison, set and logical operators only (docs/RESTORE.md)",
    )
    s.add_argument("--date-from", help="only documents whose timestamp field is at or after this")
    s.add_argument("--date-to", help="only documents whose timestamp field is at or before this")
    s.add_argument(
        "--point-in-time", help="restore the state at this time (latest point before it)"
    )
    s.add_argument("--drop", action="store_true", help="also delete documents the chain deleted")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first invalid document")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_restore)

    s = sub.add_parser("rollback", help="undo a restore, from the rollback id it reported")
    s.add_argument("rollback_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_rollback)

    s = sub.add_parser("scan", help="find recoverable conversations in MongoDB and on disk")
    s.add_argument("--source", choices=["mongodb", "filesystem", "all"], default="all")
    s.add_argument("--collection", help="only this collection (MongoDB part)")
    s.add_argument("--root", help="directory to scan (default: files.root)")
    s.add_argument("--output-dir", help="where to write the reports (default: scanner.output_dir)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_scan)

    s = sub.add_parser("recover", help="write the conversations a scan found missing into MongoDB")
    s.add_argument("--from-scan", required=True, help="a recovery_report_*.json written by scan")
    s.add_argument("--target-collection", help="default: conversations")
    s.add_argument(
        "--strategy", choices=["skip_duplicates", "overwrite", "merge", "timestamp_based"]
    )
    s.add_argument("--dry-run", action="store_true", help="plan only: write nothing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_recover)

    s = sub.add_parser("rotate", help="apply the retention policy (daily/weekly/monthly)")
    s.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_rotate)

    s = sub.add_parser("status", help="backup health: success rates, storage, restores, alerts")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("api", help="serve the recovery HTTP API (HTTPS; docs/API.md)")
    s.add_argument("action", choices=["serve"])
    s.add_argument("--host", help="address to listen on (default api.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default api.port, 8443)")
    s.add_argument("--cert", help="TLS certificate (PEM); default api.tls_cert")
    s.add_argument("--key", help="TLS private key (PEM, mode 0600); default api.tls_key")
    s.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="serve HTTP on a non-loopback address (only behind a TLS-terminating proxy)",
    )
    s.set_defaults(fn=cmd_api)

    s = sub.add_parser("api-token", help="create, list or revoke API bearer tokens")
    s.add_argument("action", choices=["create", "list", "revoke"])
    s.add_argument("--name", help="who the token is for (recorded in the audit log)")
    s.add_argument("--role", choices=["admin", "viewer"], default="admin")
    s.add_argument("--print-hash", action="store_true", help="also print the BMC_API_TOKENS entry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_api_token)

    s = sub.add_parser("audit", help="verify the audit log's hash chain")
    s.add_argument("action", choices=["verify"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("doctor", help="check key, permissions, space, MongoDB, Dagster, API")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_doctor)

    s = sub.add_parser("demo", help="seed sample data, back up, change, back up again, validate")
    s.add_argument("--conversations", type=int, default=10_000)
    s.set_defaults(fn=cmd_demo)
    return p


def _audited(args: argparse.Namespace, settings: Settings) -> Any:
    """The audit-log context for one command: the OS user, the command and its options."""
    from bmc_pipeline.engine.audit import audit_log_for, current_user

    params = {k: v for k, v in vars(args).items() if k not in ("fn", "command", "config")}
    action = args.command + (f" {args.action}" if isinstance(params.get("action"), str) else "")
    params.pop("action", None)
    return audit_log_for(settings).operation(
        actor=current_user(), via="cli", action=action, params=params
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command == "audit":  # reading the log must not add to it
            code: int = args.fn(args, settings)
            return code
        with _audited(args, settings) as info:
            code = args.fn(args, settings)
            if code:
                info["outcome"] = f"exit {code}"
        return code
    except BmcError as exc:
        print(f"bmc-backup: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bmc-backup: interrupted; nothing partial was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
