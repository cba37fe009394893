"""Running the deployment: ``keygen``, ``seed``, ``rotate``, ``status``, ``doctor``, ``demo``."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from bmc_pipeline.cli.options import (
    Commands,
    config_path,
    dry_run_option,
    json_option,
    print_json,
    run_job,
    say,
)
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.audit import current_user
from bmc_pipeline.engine.crypto import new_key_text, write_key_file
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import EXIT_CHECKS_FAILED, EXIT_NOT_VERIFIED, EXIT_OK
from bmc_pipeline.engine.health import health_markdown
from bmc_pipeline.engine.watchdog import problems, prometheus
from bmc_pipeline.jobs.history import health_now
from bmc_pipeline.jobs.maintenance import DRILL_JOB
from bmc_pipeline.launch import run_report_asset

commands = Commands()


@commands("keygen", help="create a backup key")
@click.option("--out", help="write it to this file with mode 0600 (else print it)")
@click.option("--add", is_flag=True, help="rotate: put a new key first in an existing key file")
def keygen(settings: Settings, out: str | None, add: bool) -> int:
    if not out:
        print(new_key_text())
        print(
            "# a new backup key; put it in BMC_BACKUP_KEY (or a 0600 key file) and keep a copy "
            "somewhere safe: backups cannot be read without it",
            file=sys.stderr,
        )
        return EXIT_OK
    key = write_key_file(out, add=add)
    print(f"wrote key {key.key_id} to {out} (mode 0600); set BMC_BACKUP_KEY_FILE={out}")
    print("keep a copy of this file outside this machine: backups cannot be read without it")
    return EXIT_OK


@commands("seed", help="write the sample data set into the database and files root")
@click.option("--conversations", type=int, default=1000)
@click.option("--seed", type=int, default=42)
@click.option("--no-files", is_flag=True, help="do not write the chatbot's files")
@json_option
def seed(settings: Settings, conversations: int, seed: int, no_files: bool, json: bool) -> int:
    from bmc_pipeline.engine.sample_data import seed_database, write_files

    counts = seed_database(Deployment(settings).database(), conversations, seed)
    files = [] if no_files else write_files(settings.files_root, seed)
    if json:
        print_json({"collections": counts, "files": [str(f) for f in files]})
        return EXIT_OK
    for name, n in counts.items():
        print(f"{name:>14}: {n} documents")
    if files:
        print(f"{len(files)} files written under {settings.files_root}")
    return EXIT_OK


@commands("rotate", help="apply the retention policy (daily/weekly/monthly)")
@dry_run_option
@json_option
def rotate_backups(settings: Settings, dry_run: bool, json: bool) -> int:
    config = {"action": "rotate", "dry_run": dry_run}
    result = run_job(settings, "storage_job", config, quiet=json).output
    decisions = result.pop("decisions")
    if json:
        print_json(result)
        return EXIT_OK
    for dec in decisions:
        what = "keep  " if dec["keep"] else ("WOULD DELETE" if dry_run else "deleted")
        print(f"{what} {dec['backup_id']}  {'; '.join(dec['reasons'])}")
    for u in result["unreadable_kept"]:
        print(f"keep   {u} (manifest unreadable: never deleted)")
    for p in result["stray_left_alone"]:
        print(f"left   {p} (not a blob: a link, a directory or a foreign file; remove it by hand)")
    verb = "would free" if dry_run else "freed"
    print(
        f"{len(result['deleted'])} backup(s) {'would be ' if dry_run else ''}deleted; "
        f"{result['blobs_deleted']} unreferenced file blob(s), {verb} "
        f"{result['blob_bytes_freed']} bytes"
    )
    return EXIT_OK


@commands(
    "status",
    help="backup health: per collection, success rates, storage, restores, drills, the daemon, "
    "alerts; --check exits 1 when anything is wrong (for cron, systemd timers, monitoring)",
)
@click.option(
    "--check",
    is_flag=True,
    help="exit 1 and say why when a backup is too old, the last drill failed or is too old, the "
    "Dagster daemon is not running, or alerts are open",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "prometheus"]),
    default="text",
    help="prometheus: metrics for node_exporter's textfile collector",
)
@json_option
def status(settings: Settings, check: bool, fmt: str, json: bool) -> int:
    h = health_now(settings)
    found = problems(h, settings, datetime.fromisoformat(h["at"]))
    h["problems"] = found
    if fmt == "prometheus":
        print(prometheus(h, found), end="")
    elif json:
        print_json(h)
    elif check:
        for p in found:
            print(f"PROBLEM {p}")
        print("all is well" if not found else f"{len(found)} problem(s)")
    else:
        print(health_markdown(h))
        for p in found:
            print(f"- problem: {p}")
    return EXIT_CHECKS_FAILED if check and found else EXIT_OK


@commands("doctor", help="check key, permissions, space, MongoDB, Dagster, API")
@json_option
def doctor(settings: Settings, json: bool) -> int:
    from bmc_pipeline.doctor import run_doctor

    report = run_doctor(settings)
    if json:
        print_json(report)
    else:
        for c in report["checks"]:
            print(f"{c['status'].upper():<4} {c['name']}: {c['message']}")
            if c["fix"] and c["status"] != "ok":
                print(f"     fix: {c['fix']}")
        print("all checks passed" if report["ok"] else "some checks FAILED")
    return EXIT_OK if report["ok"] else EXIT_CHECKS_FAILED


# the demo records itself, once it knows the key it uses (it may create the demo key)
@commands("demo", audited=False, help="seed sample data, back up, change, back up again, validate")
@click.option("--conversations", type=int, default=10_000)
def demo(settings: Settings, conversations: int) -> int:
    from bmc_pipeline.demo import run_demo

    return run_demo(
        settings, conversations=conversations, config_path=config_path(click.get_current_context())
    )


@commands("drill", help="restore everything into a scratch database now and verify it")
@json_option
def drill(settings: Settings, json: bool) -> int:
    Deployment(settings).keyring()  # no key, no drill: said before a run starts
    report = run_report_asset(
        settings, DRILL_JOB, "restore drill", launched_by=f"cli:{current_user()}", echo=say(json)
    ).output
    if json:
        print_json(report)
        return EXIT_OK if report["ok"] else EXIT_NOT_VERIFIED
    print(f"drill into {report['scratch_database']}: {'passed' if report['ok'] else 'FAILED'}")
    for name, c in report["collections"].items():
        mark = "ok  " if c["verified"] else "FAIL"
        print(f"  {mark} {name:>14}: {c['documents']} documents in {c['seconds']} s "
              f"({c['docs_per_s']} docs/s) from {c['backup_id']}")  # fmt: skip
        for p in c["problems"]:
            print(f"       {p}")
    if report["files_verified"] is not None:
        ok = "ok  " if report["files_verified"] else "FAIL"
        print(f"  {ok} {'files':>14}: {report['files']}")
    if report["error"]:
        print(f"  error: {report['error']}")
    print(f"  restore time (RTO): {report['rto_s']} s for {report['documents']} documents")
    return EXIT_OK if report["ok"] else EXIT_NOT_VERIFIED


@commands(
    "setup",
    audited=False,  # it records itself in the new deployment's own audit log
    help="set up a deployment in DIR: configuration, directories, key, Dagster instance, API "
    "token, TLS and systemd units if asked; safe to run again",
)
@click.option(
    "--home",
    "home",
    required=True,
    type=click.Path(file_okay=False),
    help="the deployment's directory",
)
@click.option("--database", default="bmc-cotizaciones", show_default=True, help="MongoDB database")
@click.option(
    "--mongodb-uri", help="the URI without its password (put the whole one in service.env)"
)
@click.option("--files-root", help="the chatbot's files (default: DIR/chatbot_files)")
@click.option("--remote-url", help="the off-site copy (s3://, gs://, sftp://, file://)")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="install this existing key instead of creating one",
)
@click.option(
    "--postgres-url", help="Dagster on PostgreSQL: the URL goes into DIR/service.env (0600)"
)
@click.option(
    "--self-signed", is_flag=True, help="create a self-signed TLS certificate for the API"
)
@click.option(
    "--systemd",
    "systemd",
    type=click.Path(file_okay=False),
    help="write systemd units into this directory",
)
@click.option("--user", default="bmc", show_default=True, help="the service user of the units")
@click.option("--force", is_flag=True, help="replace a configuration that differs (never a key)")
@click.option("--yes", is_flag=True, help="do it without asking")
@dry_run_option
@json_option
def setup(settings: Settings, home: str, database: str, mongodb_uri: str | None,
          files_root: str | None, remote_url: str | None, key_file: str | None,
          postgres_url: str | None, self_signed: bool, systemd: str | None, user: str,
          force: bool, yes: bool, dry_run: bool, json: bool) -> int:  # fmt: skip
    from pathlib import Path

    from bmc_pipeline.cli.setup import SetupOptions, run_setup

    opts = SetupOptions(
        database=database, mongodb_uri=mongodb_uri, files_root=files_root, remote_url=remote_url,
        postgres_url=postgres_url, self_signed=self_signed,
        systemd=Path(systemd) if systemd else None, user=user, force=force,
        key_file=Path(key_file) if key_file else None,
    )  # fmt: skip
    plan = run_setup(Path(home), opts, dry_run=True)
    if dry_run or (plan.steps and not yes and not click.confirm(
        "\n".join([f"setup of {plan.home}:", *plan.steps, "go ahead?"]), default=False
    )):  # fmt: skip
        _print_setup(plan, json)
        return EXIT_OK
    _print_setup(run_setup(Path(home), opts, dry_run=False), json)
    return EXIT_OK


def _print_setup(report: Any, json: bool) -> None:
    if json:
        print_json(report.as_dict())
        return
    for step in report.steps or ["nothing to do: the deployment is set up"]:
        print(f"  {step}")
    if report.key_id and not report.dry_run:
        print(f"backup key {report.key_id}: keep a copy of {report.home}/keys/backup.key outside "
              "this machine; backups cannot be read without it")  # fmt: skip
    if report.token:
        print(f"admin API token (shown once, stored only as a hash): {report.token}")
    if not report.dry_run:
        print(f"use it with: bmc-backup --config {report.home}/backup_config.json ...")
