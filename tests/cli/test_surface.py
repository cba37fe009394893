"""The command line offers the same commands, arguments and flags as before its move to click.

``cli_surface.json`` was written from the argparse parser the command line had before; a group
(``devdb``, ``api``, ``api-token``, ``audit``) stands for the old ``action`` argument, its
subcommands for that argument's choices, and the union of their options for the old options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from bmc_pipeline.cli import cli, main

SURFACE = json.loads((Path(__file__).parent / "cli_surface.json").read_text())


def _surface(cmd: click.Command) -> dict[str, Any]:
    options: set[str] = set()
    arguments: list[dict[str, Any]] = []
    if isinstance(cmd, click.Group):
        arguments.append({"name": "action", "choices": sorted(cmd.commands)})
        for sub in cmd.commands.values():
            options.update(_surface(sub)["options"])
        return {"arguments": arguments, "options": sorted(options)}
    for p in cmd.params:
        if isinstance(p, click.Option):
            options.add("/".join(sorted(o for o in p.opts if o.startswith("--"))))
        else:
            arguments.append({"name": p.name})
    return {"arguments": arguments, "options": sorted(options)}


def test_root_options_are_unchanged() -> None:
    assert _surface_root() == SURFACE["bmc-backup"]


def _surface_root() -> dict[str, Any]:
    opts = sorted(
        "/".join(o for o in p.opts if o.startswith("--"))
        for p in cli.params
        if isinstance(p, click.Option)
    )
    return {"arguments": [], "options": opts}


def test_every_command_is_still_there_and_nothing_was_added_silently() -> None:
    assert sorted(cli.commands) == sorted(SURFACE["commands"])


@pytest.mark.parametrize("name", sorted(SURFACE["commands"]))
def test_each_command_takes_the_same_arguments_and_flags(name: str) -> None:
    want = SURFACE["commands"][name]
    got = _surface(cli.commands[name])
    assert got["options"] == want["options"]
    # choices are what argparse offered: the old action's choices, or an option's
    assert [a["name"] for a in got["arguments"]] == [a["name"] for a in want["arguments"]]
    for g, w in zip(got["arguments"], want["arguments"], strict=True):
        if "choices" in w:
            assert g.get("choices") == w["choices"]


@pytest.mark.parametrize("name", sorted(SURFACE["commands"]))
def test_every_help_page_prints_and_exits_0(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    group = cli.commands[name]
    if isinstance(group, click.Group):  # the flags are on the subcommands' pages
        for sub in group.commands:
            assert sub in out
            assert main([name, sub, "--help"]) == 0
            out += capsys.readouterr().out
    for flag in SURFACE["commands"][name]["options"]:
        assert flag.split("/")[0] in out


def test_a_usage_error_exits_2_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "--type", "weekly"]) == 2
    assert "weekly" in capsys.readouterr().err
