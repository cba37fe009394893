"""Command groups for what runs beside the backups: ``devdb``, ``api``, ``api-token``, ``audit``."""

from __future__ import annotations

from pathlib import Path

import click

from bmc_pipeline.cli.options import Commands, json_option, print_json
from bmc_pipeline.config import Settings
from bmc_pipeline.devdb import DevServer, ferretdb_binary, install
from bmc_pipeline.engine.errors import EXIT_INVALID, EXIT_OK, BmcError

devdb = click.Group("devdb", help="the embedded MongoDB-compatible server (FerretDB)")
api = click.Group("api", help="serve the recovery HTTP API (HTTPS; docs/API.md)")
api_token = click.Group("api-token", help="create, list or revoke API bearer tokens")
audit = click.Group("audit", help="verify the audit log's hash chain")
devdb_commands, api_commands, token_commands = Commands(), Commands(), Commands()
audit_commands = Commands(audited=False)  # reading the log must not add to it


def _tools(settings: Settings) -> Path:
    return settings.path(settings.devdb.tools_dir)


def _server(settings: Settings) -> DevServer:
    d = settings.devdb
    return DevServer(
        ferretdb_binary(_tools(settings)), settings.path(d.data_dir), d.port, oplog=d.oplog
    )


def _print_status(server: DevServer, json: bool) -> None:
    st = server.status()
    if json:
        print_json(st)
    else:
        print(f"{'running' if st['running'] else 'stopped'}: {st['uri']} (data {st['data_dir']})")


@devdb_commands("install", help="build FerretDB v1.24.2 into the tools directory")
@json_option
def devdb_install(settings: Settings, json: bool) -> int:
    install(_tools(settings))
    if json:
        _print_status(_server(settings), json)
    return EXIT_OK


@devdb_commands("start", help="start it (installing it first if needed)")
@json_option
def devdb_start(settings: Settings, json: bool) -> int:
    install(_tools(settings))
    server = _server(settings)
    uri = server.start()
    if json:
        _print_status(server, json)
    else:
        oplog = " with its emulated oplog (replica set rs0)" if server.oplog else ""
        print(f"FerretDB running at {uri}{oplog} (data in {server.data_dir})")
    return EXIT_OK


@devdb_commands("stop", help="stop it")
@json_option
def devdb_stop(settings: Settings, json: bool) -> int:
    server = _server(settings)
    stopped = server.stop()
    if json:
        _print_status(server, json)
    else:
        print("stopped" if stopped else "not running")
    return EXIT_OK


@devdb_commands("status", help="say whether it runs, and where")
@json_option
def devdb_status(settings: Settings, json: bool) -> int:
    _print_status(_server(settings), json)
    return EXIT_OK


@api_commands("serve", help="serve the API until Ctrl-C")
@click.option("--host", help="address to listen on (default api.host, 127.0.0.1)")
@click.option("--port", type=int, help="port (default api.port, 8443)")
@click.option("--cert", help="TLS certificate (PEM); default api.tls_cert")
@click.option("--key", help="TLS private key (PEM, mode 0600); default api.tls_key")
@click.option(
    "--allow-plain-http",
    is_flag=True,
    help="serve HTTP on a non-loopback address (only behind a TLS-terminating proxy)",
)
def api_serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    cert: str | None,
    key: str | None,
    allow_plain_http: bool,
) -> int:
    from bmc_pipeline.api.serve import build_server

    server, url = build_server(
        settings, host=host, port=port, cert=cert, key=key, allow_plain_http=allow_plain_http
    )
    print(f"recovery API on {url}/api/recovery (OpenAPI at {url}/api/docs); Ctrl-C stops it")
    server.run()
    return EXIT_OK


name_option = click.option("--name", help="who the token is for (recorded in the audit log)")


@token_commands("create", help="make a new token (shown once)")
@name_option
@click.option("--role", type=click.Choice(["admin", "viewer"]), default="admin")
@click.option("--print-hash", is_flag=True, help="also print the BMC_API_TOKENS entry")
@json_option
def token_create(
    settings: Settings, name: str | None, role: str, print_hash: bool, json: bool
) -> int:
    from bmc_pipeline.api.tokens import TokenStore

    if not name:
        raise BmcError("give the token a name with --name (the audit log records it)")
    store = TokenStore.for_settings(settings)
    secret, token = store.create(name, role)
    if json:
        print_json({"name": token.name, "role": token.role, "token": secret})
        return EXIT_OK
    print(f"token {token.name} ({token.role}) added to {store.path}")
    print("the token (shown only now; the file keeps its hash):")
    print(secret)
    if print_hash:
        print(f"for BMC_API_TOKENS: {token.name}:{token.role}:{token.sha256}")
    return EXIT_OK


@token_commands("list", help="list the tokens (names and roles, never secrets)")
@json_option
def token_list(settings: Settings, json: bool) -> int:
    from bmc_pipeline.api.tokens import TokenStore

    rows = [
        {"name": t.name, "role": t.role, "created": t.created, "source": t.source}
        for t in TokenStore.for_settings(settings).tokens()
    ]
    if json:
        print_json({"tokens": rows})
        return EXIT_OK
    for r in rows:
        print(f"{r['name']:<24} {r['role']:<7} {r['source']:<5} {r['created']}")
    return EXIT_OK


@token_commands("revoke", help="remove a token by name")
@name_option
@json_option
def token_revoke(settings: Settings, name: str | None, json: bool) -> int:
    from bmc_pipeline.api.tokens import TokenStore

    if not name:
        raise BmcError("name the token to revoke with --name")
    store = TokenStore.for_settings(settings)
    if not store.revoke(name):
        raise BmcError(f"no token named {name!r} in {store.path} ('api-token list')")
    if json:
        print_json({"name": name, "revoked": True})
    else:
        print(f"token {name} revoked")
    return EXIT_OK


@audit_commands("verify", help="check the chain, MACs and head; exit 5 if tampered")
@json_option
def audit_verify(settings: Settings, json: bool) -> int:
    from bmc_pipeline.engine.audit import audit_log_for

    result = audit_log_for(settings).verify()
    if json:
        print_json(result.as_dict())
        return EXIT_OK if result.ok else EXIT_INVALID
    parts = f" in {result.files} files" if result.files > 1 else ""
    if result.ok:
        print(f"{result.path}: {result.lines} line(s){parts}, chain intact")
    elif result.line:  # counted over every file; the message names the file and its line
        print(f"{result.path}: TAMPERED at line {result.line}: {result.message}")
    else:
        print(f"{result.path}: TAMPERED: {result.message}")
    print(
        f"  MACs verified: {result.macs_verified}, lines without a MAC: {result.unkeyed}, "
        f"MACs under keys not configured here: {result.unverifiable_macs}"
    )
    for w in result.warnings:
        print(f"  warning: {w}")
    return EXIT_OK if result.ok else EXIT_INVALID


def register(root: click.Group) -> None:
    for group, cmds in (
        (devdb, devdb_commands),
        (api, api_commands),
        (api_token, token_commands),
        (audit, audit_commands),
    ):
        cmds.register(group)
        root.add_command(group)
