"""Bringing data back: ``restore``, ``rollback``, ``scan`` and ``recover``."""

from __future__ import annotations

import json as json_lib
import sys
from pathlib import Path
from typing import Any

import click

from bmc_pipeline.cli.options import (
    Commands,
    dry_run_option,
    json_option,
    print_json,
    run_job,
    strategy_option,
)
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.errors import EXIT_NOT_VERIFIED, EXIT_OK, BmcError
from bmc_pipeline.engine.restore import RestoreFilters
from bmc_pipeline.engine.vocabulary import Source, Strategy, choices

commands = Commands()


def print_restore_report(report: dict[str, Any], *, as_json: bool, undo: bool = True) -> None:
    if as_json:
        print_json(report)
        return
    what = "would restore" if report["dry_run"] else "restored"
    print(
        f"{what} {report['restored']} documents of {report['collection']} into "
        f"{report['target_collection']} from {report['backup_id']} "
        f"(chain: {' -> '.join(report['chain']) or 'file'})"
    )
    if report.get("replay"):
        r = report["replay"]
        print(f"  the state at {r['to']}: captured changes since {r['since']} replayed over it")
    print(
        f"  inserted {report['inserted']}, overwritten {report['overwritten']}, merged "
        f"{report['merged']}, skipped {report['skipped']} ({report['unchanged']} unchanged), "
        f"invalid {report['invalid']}, deleted {report['deleted']}, "
        f"filtered out {report['filtered_out']}; {report['read']} read"
    )
    if report["generated_ids"] or report["duplicates"]:
        print(
            f"  {report['generated_ids']} document(s) without _id given one derived from their "
            f"content; {report['duplicates']} repeated id(s) skipped"
        )
    for action, ids in report["samples"].items():
        print(f"  e.g. {action}: {', '.join(ids)}")
    for e in report["errors"][:10]:
        print(f"  invalid: {e}")
    if report["quarantine_file"]:
        print(
            f"  invalid documents saved, encrypted, to {report['quarantine_file']}; read them "
            f"with: bmc-backup quarantine show {report['quarantine_id']}"
        )
    if report["rollback_id"] and undo:
        print(f"  undo with: bmc-backup rollback {report['rollback_id']}")
    print_verified(report)


def print_verified(report: dict[str, Any]) -> None:
    """The last line: what was proven, or that a dry run wrote nothing (not a failure)."""
    if report["dry_run"]:
        print("  dry run: nothing was written")
    else:
        print(f"  verified: {report['verified']} ({'; '.join(report['verification'])})")


def restore_exit(report: dict[str, Any]) -> int:
    """A dry run always succeeds; a restore that wrote succeeds only if it verified."""
    return EXIT_OK if report["dry_run"] or report["verified"] else EXIT_NOT_VERIFIED


@commands(
    "restore",
    help="restore collections (all of them without --collection) and, with --files, the "
    "chatbot's files, from a backup (or one collection from a JSON file)",
)
@click.argument("backup_id")
@click.option(
    "--collection",
    multiple=True,
    help="the collection in the backup (repeatable; default: every collection it holds)",
)
@click.option("--target-collection", help="restore into this collection instead (one --collection)")
@click.option("--files", "files", is_flag=True, help="also restore the files at the same point")
@click.option(
    "--no-indexes",
    is_flag=True,
    help="do not recreate or check the recorded indexes (e.g. for a side-by-side restore)",
)
@strategy_option
@dry_run_option
@click.option("--session-id", multiple=True, help="only this session (repeatable)")
@click.option(
    "--query",
    help='only documents matching this MongoDB query (JSON), e.g. \'{"status": "open"}\'; '
    "comparison, set and logical operators only (docs/RESTORE.md)",
)
@click.option("--date-from", help="only documents whose timestamp field is at or after this")
@click.option("--date-to", help="only documents whose timestamp field is at or before this")
@click.option("--point-in-time", help="restore the state at this time (latest point before it)")
@click.option("--drop", is_flag=True, help="also delete documents the chain deleted")
@click.option("--fail-fast", is_flag=True, help="stop at the first invalid document")
@click.option(
    "--no-auto-rollback",
    is_flag=True,
    help="if a write fails half-way, keep what was written (and say how to roll back) instead of "
    "rolling back at once",
)
@click.option(
    "--require-ids",
    is_flag=True,
    help="a JSON file's documents without _id are refused (and counted) instead of given an id "
    "derived from their content",
)
@json_option
def restore(
    settings: Settings,
    backup_id: str,
    collection: tuple[str, ...],
    target_collection: str | None,
    files: bool,
    no_indexes: bool,
    strategy: str | None,
    dry_run: bool,
    session_id: tuple[str, ...],
    query: str | None,
    date_from: str | None,
    date_to: str | None,
    point_in_time: str | None,
    drop: bool,
    fail_fast: bool,
    no_auto_rollback: bool,
    require_ids: bool,
    json: bool,
) -> int:
    given = {
        "date_from": date_from,
        "date_to": date_to,
        "session_ids": list(session_id),
        "point_in_time": point_in_time,
        "drop_deleted": drop,
        "query": query,
    }
    RestoreFilters.from_dict(given)  # a bad date or query is refused here, before a run
    chosen = Strategy(strategy) if strategy else settings.restore.default_strategy
    if target_collection and len(collection) != 1:
        raise BmcError("--target-collection needs exactly one --collection")
    config: dict[str, Any] = {
        **{k: v for k, v in given.items() if v is not None},
        "backup_id": backup_id, "strategy": chosen.value, "dry_run": dry_run,
        "fail_fast": fail_fast, "indexes": not no_indexes, "auto_rollback": not no_auto_rollback,
        "require_ids": require_ids,
    }  # fmt: skip
    if len(collection) == 1 and not files:  # one collection: the report as it always was
        config.update(collection=collection[0], target_collection=target_collection)
        report = run_job(settings, "restore_job", config, quiet=json).output
        print_restore_report(report, as_json=json)
        return restore_exit(report)
    config.update(collections=list(collection), files=files)
    whole = run_job(settings, "restore_job", config, quiet=json).output
    if json:
        print_json(whole)
    else:
        for one in whole["collections"].values():
            print_restore_report(one, as_json=False, undo=False)
        if whole["files"]:
            print_files_report(whole["files"], undo=False)
        if whole["rollback_id"]:
            print(f"one rollback point for all of it: bmc-backup rollback {whole['rollback_id']}")
    return restore_exit(whole)


def print_files_report(report: dict[str, Any], *, undo: bool = True) -> None:
    what = "would restore" if report["dry_run"] else "restored"
    print(
        f"{what} {report['restored']} file(s) into {report['target']} from {report['backup_id']}; "
        f"{report['unchanged']} unchanged, {report['skipped']} not selected"
    )
    for f in report["files"]:
        if f["action"] != "skipped":
            print(f"  {f['action']:<9} {f['path']} ({f['bytes']} bytes)")
    if report["rollback_id"] and undo:
        print(f"  undo with: bmc-backup rollback {report['rollback_id']}")
    print_verified(report)


@commands("restore-files", help="restore the chatbot's files (knowledge base, config, .env)")
@click.argument("backup_id")
@click.option("--to", "to", help="the directory to restore into (default: files.root)")
@click.option("--path", "path", multiple=True, help="only files matching this glob (repeatable)")
@dry_run_option
@json_option
def restore_files(
    settings: Settings,
    backup_id: str,
    to: str | None,
    path: tuple[str, ...],
    dry_run: bool,
    json: bool,
) -> int:
    config = {"backup_id": backup_id, "files": True, "file_paths": list(path), "dry_run": dry_run,
              "files_target": str(Path(to).absolute()) if to else None}  # fmt: skip
    report = run_job(settings, "restore_job", config, quiet=json).output["files"]
    if json:
        print_json(report)
    else:
        print_files_report(report)
    return restore_exit(report)


@commands("rollback", help="undo a restore, from the rollback id it reported")
@click.argument("rollback_id")
@click.option(
    "--force",
    is_flag=True,
    help="roll back even if documents the restore wrote were changed since (they are lost)",
)
@json_option
def rollback(settings: Settings, rollback_id: str, force: bool, json: bool) -> int:
    config = {"rollback_id": rollback_id, "force": force}
    result = run_job(settings, "rollback_job", config, quiet=json).output
    if json:
        print_json(result)
    else:
        print(
            f"rolled back {result['collection']}: {result['deleted']} inserted documents removed, "
            f"{result['restored']} previous versions put back; verified: {result['verified']} "
            f"({result['verification']})"
        )
    return EXIT_OK if result["verified"] else EXIT_NOT_VERIFIED


@commands("scan", help="find recoverable conversations in MongoDB and on disk")
@click.option("--source", type=click.Choice(choices(Source)), default=Source.all.value)
@click.option("--collection", help="only this collection (MongoDB part)")
@click.option("--root", help="directory to scan (default: files.root)")
@click.option("--output-dir", help="where to write the reports (default: scanner.output_dir)")
@json_option
def scan(
    settings: Settings,
    source: str,
    collection: str | None,
    root: str | None,
    output_dir: str | None,
    json: bool,
) -> int:
    config = {"source": source, "collection": collection,
              "root": str(Path(root).absolute()) if root else None,
              "output_dir": str(Path(output_dir).absolute()) if output_dir else None}  # fmt: skip
    summary = run_job(settings, "scan_job", config, quiet=json, needs_key=False).output
    json_path, md_path = (Path(p) for p in summary["report_files"])
    report = json_lib.loads(json_path.read_text(encoding="utf-8"))  # what the run wrote
    if json:
        print_json({**report, "report_files": [str(json_path), str(md_path)]})
        return EXIT_OK
    for k, v in report["summary"].items():
        print(f"{k.replace('_', ' '):>26}: {v}")
    for r in report["recommendations"]:
        print(f"- {r}")
    print(f"reports: {json_path} and {md_path}")
    return EXIT_OK


@commands("recover", help="write the conversations a scan found missing into MongoDB")
@click.option("--from-scan", required=True, help="a recovery_report_*.json written by scan")
@click.option("--target-collection", help="default: conversations")
@strategy_option
@dry_run_option
@json_option
def recover(
    settings: Settings,
    from_scan: str,
    target_collection: str | None,
    strategy: str | None,
    dry_run: bool,
    json: bool,
) -> int:
    config = {"from_scan": str(Path(from_scan).absolute()), "target_collection": target_collection,
              "strategy": strategy or settings.restore.default_strategy.value,
              "dry_run": dry_run}  # fmt: skip
    result = run_job(settings, "restore_job", config, quiet=json).output
    missing: list[str] = result["not_found"]
    print_restore_report(result, as_json=json)
    if missing and not json:
        print(
            f"warning: {len(missing)} conversation(s) of the report were not recovered, because "
            "they are no longer found as the scan saw them; scan again to see what is there now:",
            file=sys.stderr,
        )
        for line in missing[:10]:
            print(f"  {line}", file=sys.stderr)
        if len(missing) > 10:
            print(f"  ... and {len(missing) - 10} more (all are in --json output)", file=sys.stderr)
    return restore_exit(result)
