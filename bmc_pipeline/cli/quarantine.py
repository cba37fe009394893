"""``bmc-backup quarantine list|show|export``: the documents restores refused, decrypted on demand.

Reading a quarantine decrypts customer data, so ``show`` and ``export`` are audited like exports
of a backup (they write a "started" line first); ``list`` shows names and sizes only.
"""

from __future__ import annotations

from pathlib import Path

import click

from bmc_pipeline.cli.options import Commands, json_option, print_json
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import EXIT_OK
from bmc_pipeline.engine.quarantine import (
    export_quarantine,
    extended_json_line,
    list_quarantines,
    read_quarantine,
)

group = click.Group("quarantine", help="documents a restore refused, kept encrypted")
commands = Commands()


@commands("list", help="list the quarantines, newest first (ids and sizes only)")
@json_option
def quarantine_list(settings: Settings, json: bool) -> int:
    entries = list_quarantines(Deployment(settings).store())
    if json:
        print_json({"quarantines": [e.as_dict() for e in entries], "count": len(entries)})
        return EXIT_OK
    if not entries:
        print("no quarantined documents")
    for e in entries:
        print(f"{e.quarantine_id}  {e.size_bytes} bytes")
    return EXIT_OK


@commands("show", help="print the refused documents of one quarantine, with each one's reason")
@click.argument("quarantine_id")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many")
def quarantine_show(settings: Settings, quarantine_id: str, limit: int | None) -> int:
    deployment = Deployment(settings)
    records = read_quarantine(deployment.store(), deployment.keyring(), quarantine_id)
    for n, (reason, document) in enumerate(records, start=1):
        print(extended_json_line(reason, document))
        if limit is not None and n >= limit:
            break
    return EXIT_OK


@commands("export", help="write one quarantine as Extended JSON lines (mode 0600)")
@click.argument("quarantine_id")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="file to write")
@json_option
def quarantine_export(settings: Settings, quarantine_id: str, out: str, json: bool) -> int:
    deployment = Deployment(settings)
    target = Path(out)
    n = export_quarantine(
        deployment.store(), deployment.keyring(), quarantine_id, target,
        file_mode=0o600,  # decrypted customer data: its owner only, whatever the settings say
    )  # fmt: skip
    if json:
        print_json({"quarantine_id": quarantine_id, "documents": n, "file": str(target)})
    else:
        print(f"{n} document(s) of {quarantine_id} written to {target} (mode 0600, plaintext)")
    return EXIT_OK


def register(root: click.Group) -> None:
    commands.register(group)
    root.add_command(group)
