"""What every command shares: the settings, JSON output, the audit line, and options built once.

Options that several commands take (``--json``, ``--strategy``, ``--dry-run``) are defined here,
from the engine's vocabulary, so a command declares them in one word and they read the same
everywhere.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import click

from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.engine.audit import audit_log_for, current_user
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.vocabulary import Strategy, choices
from bmc_pipeline.launch import OpRun, run_op_job

F = TypeVar("F", bound=Callable[..., Any])


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def run_job(
    settings: Settings, job: str, config: dict[str, Any], *, quiet: bool, needs_key: bool = True
) -> OpRun:
    """The command's work as a Dagster run of ``job`` in this process (so it is in the run
    history, under its job, and a failure alerts), its progress lines on stderr as before.

    A run that failed with a report attached (a restore that wrote but did not verify, a pulled
    backup that does not validate) returns it, marked not succeeded: the command prints it and
    exits as it always did. With ``needs_key``, a missing key is said plainly before any run.
    """
    if needs_key:
        Deployment(settings).keyring()
    return run_op_job(
        settings, job, job.replace("_job", "_op"), config, launched_by=f"cli:{current_user()}",
        echo=say(quiet), failed_report=True,
    )  # fmt: skip


def say(quiet: bool) -> Callable[[str], None]:
    """A progress log on stderr (``... message``), silent when ``quiet`` (JSON output)."""

    def log(msg: str) -> None:
        if not quiet:
            print(f"... {msg}", file=sys.stderr, flush=True)

    return log


class IsoDate(click.ParamType):  # type: ignore[type-arg]  # generic only in recent click
    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-11-25", param, ctx)


json_option = click.option("--json", "json", is_flag=True, help="print the result as JSON")
dry_run_option = click.option("--dry-run", is_flag=True, help="plan only: write nothing")
strategy_option = click.option(
    "--strategy",
    type=click.Choice(choices(Strategy)),
    help="how existing documents are treated (default: restore.default_strategy): "
    + "; ".join(f"{s.value}: {s.summary}" for s in Strategy),
)


def settings_of(ctx: click.Context) -> Settings:
    """The settings for this invocation (``--config``), loaded once."""
    obj = ctx.find_root().ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    settings: Settings = obj["settings"]
    return settings


def config_path(ctx: click.Context) -> str | None:
    path: str | None = ctx.find_root().ensure_object(dict).get("config")
    return path


READ_ONLY = frozenset(
    {"list", "validate", "doctor", "status", "devdb status", "api-token list", "quarantine list"}
)


def command(
    group: click.Group, name: str, *, audited: bool = True, **attrs: Any
) -> Callable[[F], F]:
    """Register ``fn(settings, **options) -> exit code`` as a command of ``group``.

    The command line's audit line is written around it: the OS user, the command path and its
    options (``audited=False`` for reading the audit log itself, which must not add to it). A
    command that changes or reads out data (all but :data:`READ_ONLY` ones) writes a "started"
    line first and does not run when it cannot (exit 10).
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(**params: Any) -> int:
            ctx = click.get_current_context()
            settings = settings_of(ctx)
            if not audited:
                code: int = fn(settings, **params)
                return code
            action = " ".join(ctx.command_path.split()[1:])
            with audit_log_for(settings).operation(
                actor=current_user(),
                via="cli",
                action=action,
                params=params,
                changes=action not in READ_ONLY,
            ) as info:
                code = fn(settings, **params)
                if code:
                    info["outcome"] = f"exit {code}"
            return code

        group.command(name, **attrs)(run)
        return fn

    return wrap


class Commands:
    """The commands of one module, collected by decorator and added to the root group by
    :meth:`register` (so each module's options sit on the function they configure)."""

    def __init__(self, *, audited: bool = True) -> None:
        self.audited = audited
        self._entries: list[tuple[str, Callable[..., int], bool, dict[str, Any]]] = []

    def __call__(self, name: str, *, audited: bool | None = None, **attrs: Any) -> Callable[[F], F]:
        def add(fn: F) -> F:
            self._entries.append((name, fn, self.audited if audited is None else audited, attrs))
            return fn

        return add

    def register(self, group: click.Group) -> None:
        for name, fn, audited, attrs in self._entries:
            command(group, name, audited=audited, **attrs)(fn)
