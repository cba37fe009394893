"""``bmc-backup``: the command line.

Each command parses its options, calls the engine (or a Dagster job, for backups, so the run is in
the UI's history) and reports: a short human text by default, JSON with ``--json``. Engine errors
become one line on stderr (a JSON object on stdout under ``--json``) and the exit code declared on
the error's class in ``engine/errors.py`` (docs/CLI.md lists them).

Commands live by area: ``backups`` (backup, list, validate, export, push, pull, delete),
``recovery`` (restore, rollback, scan, recover), ``admin`` (keygen, seed, rotate, status, doctor,
demo), ``capture`` (the long-running capture), ``servers`` (the devdb, api, api-token and audit
groups) and ``quarantine``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from bmc_pipeline.cli import admin, backups, capture, quarantine, recovery, servers
from bmc_pipeline.engine.errors import EXIT_INTERRUPTED, BmcError


@click.group(
    name="bmc-backup",
    help="Backup and recovery for the bmc-cotizaciones database and the chatbot's files.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config", help="path of backup_config.json (default: $BMC_CONFIG or ./backup_config.json)"
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    ctx.ensure_object(dict)["config"] = config


for area in (backups, recovery, admin, capture):
    area.commands.register(cli)
servers.register(cli)
quarantine.register(cli)


PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    # files nobody gave a mode to (Dagster's run storage and logs, the API server's) are its
    # owner's only; backups, restored files and reports set their documented modes themselves
    os.umask(PRIVATE_UMASK)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="bmc-backup", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help and friends
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors: exit 2, as before
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("bmc-backup: interrupted; nothing partial was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BmcError as exc:
        if "--json" in args:
            error = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
            print(json.dumps({"error": error}, ensure_ascii=False))
        else:
            print(f"bmc-backup: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bmc-backup: interrupted; nothing partial was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result) if isinstance(result, int) else 0


__all__ = ["cli", "main"]
