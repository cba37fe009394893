"""The audit log: every kind of tampering is found and named by line; concurrent writers chain."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.engine.audit import AuditLog, scrub
from bmc_pipeline.engine.audit_chain import entry_hash
from bmc_pipeline.engine.crypto import Key, KeyRing
from tests.support import make_settings, write_config


def _log(tmp_path: Path, keyring: KeyRing | None, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log", keyring)
    for i in range(n):
        log.append(actor="alice", via="cli", action=f"backup {i}", params={"i": i})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines))


def test_an_untouched_log_verifies_with_every_mac(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    result = log.verify()
    assert result.ok and result.lines == 5 and result.macs_verified == 5
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"
    first = json.loads(_lines(log)[0])
    assert (
        first["seq"] == 1
        and first["prev"] == "0" * 64
        and first["key_id"] == keyring.primary.key_id
    )


def test_an_edited_line_is_found(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    lines = _lines(log)
    lines[2] = lines[2].replace('"outcome":"ok"', '"outcome":"error"')
    _write(log, lines)
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, "edited")
    assert "line 3 was edited" in str(r.message)


def test_a_line_rewritten_with_a_fresh_hash_fails_its_mac_or_breaks_the_chain(
    tmp_path: Path, keyring: KeyRing
) -> None:
    log = _log(tmp_path, keyring)
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["actor"] = "mallory"
    entry["hash"] = entry_hash(entry)  # anyone can recompute a hash; nobody without the key a MAC
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    _write(log, lines)
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, "forged")
    # a verifier without the key still sees the chain break right after it
    r = AuditLog(log.path, None).verify()
    assert not r.ok and r.line == 4 and r.kind == "inserted"


def test_a_removed_line_is_found(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    lines = _lines(log)
    del lines[2]
    _write(log, lines)
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, "removed")
    assert "1 line(s) were removed before line 3" in str(r.message)


def test_lines_removed_from_the_end_are_found_through_the_head(
    tmp_path: Path, keyring: KeyRing
) -> None:
    log = _log(tmp_path, keyring)
    _write(log, _lines(log)[:-2])
    r = log.verify()
    assert (
        not r.ok and r.kind == "removed" and "2 line(s) were removed from the end" in str(r.message)
    )
    log.path.write_text("")
    assert not log.verify().ok


def test_an_inserted_line_is_found(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    lines = _lines(log)
    replayed = [*lines[:2], lines[1], *lines[2:]]  # a copy of line 2 after it
    _write(log, replayed)
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, "inserted")

    # a fabricated line that chains correctly but has no MAC: the next line then repeats its number
    fake: dict[str, Any] = {**json.loads(lines[1]), "seq": 3, "actor": "mallory", "mac": None}
    fake["prev"] = json.loads(lines[1])["hash"]
    fake["key_id"] = None
    fake["hash"] = entry_hash(fake)
    _write(log, [*lines[:2], json.dumps(fake), *lines[2:]])
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, "forged")  # no MAC after keyed lines


def test_appends_after_tampering_do_not_heal_it(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    log.append(actor="alice", via="cli", action="later")
    assert log.verify().line == 2


def _writer(path: str, key: bytes, who: str, rotate_bytes: int | None) -> None:
    log = AuditLog(Path(path), KeyRing([Key(key)]), rotate_bytes=rotate_bytes)
    for i in range(150):
        log.append(actor=who, via="cli", action=f"op {i}")


@pytest.mark.parametrize("rotate_bytes", [None, 8192], ids=["one file", "rotating"])
def test_concurrent_writers_produce_one_chain(
    tmp_path: Path, key: Key, rotate_bytes: int | None
) -> None:
    """Three processes appending at once, also while they rotate the file under each other."""
    path = str(tmp_path / "audit.log")
    ctx = multiprocessing.get_context("fork")
    args = [(path, key.material, f"w{i}", rotate_bytes) for i in range(3)]
    procs = [ctx.Process(target=_writer, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    r = AuditLog(Path(path), KeyRing([key])).verify()
    assert r.ok and r.lines == 450 and r.macs_verified == 450, r.message
    assert (r.files > 3) if rotate_bytes else r.files == 1


def test_parameters_are_scrubbed_of_secrets() -> None:
    out = scrub(
        {
            "token": "bmc_x",
            "nested": {"api_key": "k", "password": "p", "ok": "v"},
            "Authorization": "Bearer y",
            "big": "x" * 1000,
            "many": list(range(50)),
        }
    )
    assert out["token"] == out["Authorization"] == "<redacted>"
    assert out["nested"] == {"api_key": "<redacted>", "password": "<redacted>", "ok": "v"}
    assert len(out["big"]) < 320 and out["many"][-1] == "<30 more>"


def test_commands_are_audited_and_audit_verify_reports_the_line(
    tmp_path: Path, key: Key, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, "mongomock://audit-cli", "bmc", key)
    cfg = str(write_config(settings, tmp_path / "config.json"))
    monkeypatch.delenv("BMC_BACKUP_KEY", raising=False)
    key_file = tmp_path / "k.key"
    assert main(["--config", cfg, "keygen", "--out", str(key_file)]) == 0
    monkeypatch.setenv("BMC_BACKUP_KEY_FILE", str(key_file))
    capsys.readouterr()
    assert main(["--config", cfg, "api-token", "create", "--name", "ops", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    assert main(["--config", cfg, "list"]) == 0
    assert main(["--config", cfg, "validate", "20200101T000000Z-full-abcdef"]) == 4
    capsys.readouterr()
    assert main(["--config", cfg, "audit", "verify"]) == 0
    assert "6 line(s), chain intact" in capsys.readouterr().out
    log = AuditLog(settings.path(settings.audit.path))
    entries = [json.loads(line) for line in _lines(log)]
    # a command that changes something says so before it runs; read-only ones once, after
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("keygen", "started"),
        ("keygen", "ok"),
        ("api-token create", "started"),
        ("api-token create", "ok"),
        ("list", "ok"),
        ("validate", "error"),
    ]
    assert entries[0]["mac"] is None and entries[1]["mac"] is None  # no key existed yet
    assert all(e["mac"] for e in entries[2:])
    assert "not found" in entries[5]["detail"]
    assert token not in log.path.read_text()  # the secret is never written
    lines = _lines(log)
    lines[3] = lines[3].replace('"ops"', '"eve"')
    _write(log, lines)
    assert main(["--config", cfg, "audit", "verify"]) == 5
    assert "TAMPERED at line 4" in capsys.readouterr().out


# -- forging without the key: every way of doing it is found --------------------------------------
def _rewrite_suffix(log: AuditLog, start: int, key_id: str | None, mac: Any) -> list[str]:
    """Lines from ``start`` (1-based) rewritten by someone without the key: chained again with
    recomputed hashes, and a MAC that is either missing or made up."""
    lines = _lines(log)
    out = lines[: start - 1]
    prev = json.loads(out[-1])["hash"] if out else "0" * 64
    for line in lines[start - 1 :]:
        entry = {**json.loads(line), "actor": "mallory", "prev": prev}
        entry["hash"] = entry_hash(entry)
        entry["key_id"], entry["mac"] = key_id, mac
        prev = entry["hash"]
        out.append(json.dumps(entry))
    return out


def _head(log: AuditLog, lines: list[str], key_id: str | None, mac: Any) -> None:
    last = json.loads(lines[-1])
    log.head_path.write_text(
        json.dumps({"seq": last["seq"], "hash": last["hash"], "key_id": key_id, "mac": mac})
    )


@pytest.mark.parametrize(
    ("key_id", "mac", "kind"),
    [(None, None, "forged"), ("k-invented", "ab" * 32, "forged")],
    ids=["without a MAC", "with a MAC under an invented key"],
)
def test_a_suffix_rewritten_without_the_key_is_found(
    tmp_path: Path, keyring: KeyRing, key_id: str | None, mac: Any, kind: str
) -> None:
    log = _log(tmp_path, keyring)
    forged = _rewrite_suffix(log, 3, key_id, mac)
    _write(log, forged)
    _head(log, forged, key_id, mac)
    r = log.verify()
    assert not r.ok and (r.line, r.kind) == (3, kind), r.as_dict()


def test_an_unsigned_head_over_a_keyed_log_is_found(tmp_path: Path, keyring: KeyRing) -> None:
    log = _log(tmp_path, keyring)
    _head(log, _lines(log), None, None)
    r = log.verify()
    assert not r.ok and r.kind == "forged" and "not signed" in str(r.message)


def test_the_last_lines_removed_with_the_head_file_are_found(
    tmp_path: Path, keyring: KeyRing
) -> None:
    log = _log(tmp_path, keyring)
    _write(log, _lines(log)[:-2])
    log.head_path.unlink()
    r = log.verify()
    assert not r.ok and r.kind == "removed" and "is missing" in str(r.message)


def test_a_log_started_before_a_key_was_configured_still_verifies(
    tmp_path: Path, keyring: KeyRing
) -> None:
    log = AuditLog(tmp_path / "audit.log", None)
    log.append(actor="alice", via="cli", action="before the key")
    keyed = AuditLog(tmp_path / "audit.log", keyring)
    keyed.append(actor="alice", via="cli", action="after the key")
    r = keyed.verify()
    assert r.ok and r.unkeyed == 1 and r.macs_verified == 1


def test_a_command_without_the_key_adds_no_unsigned_line_to_a_signed_log(
    tmp_path: Path, keyring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    """The operation runs; its line, which could not be signed, is not written (it would read as a
    forgery), and the log keeps verifying."""
    _log(tmp_path, keyring, n=2)
    unkeyed = AuditLog(tmp_path / "audit.log", None)
    ran = []
    with unkeyed.operation(actor="bob", via="cli", action="list"):
        ran.append(True)
    assert ran
    assert "not recorded in the audit log" in caplog.text
    result = AuditLog(tmp_path / "audit.log", keyring).verify()
    assert result.ok and result.lines == 2
