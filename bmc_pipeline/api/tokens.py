"""API bearer tokens: random secrets shown once, stored only as SHA-256 hashes.

A token is ``bmc_`` followed by 43 URL-safe characters (256 random bits). Because it is random and
long, a plain SHA-256 is the right way to store it (a slow password hash protects guessable
secrets; nothing here is guessable), and a lookup is one hash and a constant-time comparison.

Tokens live in ``api.tokens_file`` (JSON, mode 0600, refused if group or others can read it, as
for the key file) and, for deployments that configure by environment, in ``BMC_API_TOKENS``:
comma-separated ``name:role:sha256hex`` entries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.errors import ConfigError

ROLES = ("admin", "viewer")
TOKEN_PREFIX = "bmc_"  # noqa: S105 (a prefix that makes tokens recognisable, not a secret)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Token:
    """A configured token: who it stands for, what it may do, and the hash of its secret."""

    name: str
    role: str
    sha256: str
    created: str = ""
    source: str = "file"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"token name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-' "
            "(it is what the audit log records as the actor)"
        )
    return name


def _check_role(role: str, where: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    return role


class TokenStore:
    """The tokens of one deployment: the tokens file plus ``BMC_API_TOKENS``."""

    def __init__(self, path: Path, env_value: str | None = None) -> None:
        self.path = path
        self.env_value = env_value

    @classmethod
    def for_settings(cls, settings: Settings) -> TokenStore:
        return cls(settings.path(settings.api.tokens_file), settings.api_tokens_env)

    # -- reading ---------------------------------------------------------------------------------
    def _read_file(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"API tokens file {self.path} has mode {mode:o}, readable or writable by others; "
                f"run: chmod 600 {self.path}"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["tokens"]
            if not isinstance(entries, list):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"API tokens file {self.path} is not readable JSON with a 'tokens' list ({exc}); "
                "recreate it with 'bmc-backup api-token create'"
            ) from None
        return [e for e in entries if isinstance(e, dict)]

    def tokens(self) -> list[Token]:
        out = []
        for e in self._read_file():
            try:
                name, role, digest = str(e["name"]), str(e["role"]), str(e["sha256"])
            except KeyError as exc:
                raise ConfigError(f"API tokens file {self.path}: an entry lacks {exc}") from None
            out.append(
                Token(
                    _check_name(name),
                    _check_role(role, str(self.path)),
                    digest,
                    str(e.get("created", "")),
                )
            )
        for part in (self.env_value or "").split(","):
            if not part.strip():
                continue
            fields = part.strip().split(":")
            if len(fields) != 3 or not _HASH_RE.match(fields[2]):
                raise ConfigError(
                    "BMC_API_TOKENS: each entry is name:role:sha256hex (64 lowercase hex digits), "
                    "comma-separated; 'bmc-backup api-token create --print-hash' prints one"
                )
            out.append(
                Token(
                    _check_name(fields[0]),
                    _check_role(fields[1], "BMC_API_TOKENS"),
                    fields[2],
                    source="env",
                )
            )
        return out

    def authenticate(self, secret: str) -> Token | None:
        """The token whose hash matches ``secret``, comparing every entry in constant time."""
        digest = hash_token(secret)
        found = None
        for t in self.tokens():
            if hmac.compare_digest(t.sha256, digest):
                found = t
        return found

    # -- changing --------------------------------------------------------------------------------
    def _write(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"tokens": entries}, indent=2).encode() + b"\n")

    def create(self, name: str, role: str = "admin") -> tuple[str, Token]:
        """Make a new token; returns the secret (shown once, never stored) and its entry."""
        _check_name(name)
        _check_role(role, "--role")
        entries = self._read_file()
        if any(e.get("name") == name for e in entries):
            raise ConfigError(
                f"a token named {name!r} exists in {self.path}; revoke it first "
                f"('bmc-backup api-token revoke {name}') or choose another name"
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry = {"name": name, "role": role, "sha256": hash_token(secret), "created": created}
        self._write([*entries, entry])
        return secret, Token(name, role, entry["sha256"], created)

    def revoke(self, name: str) -> bool:
        entries = self._read_file()
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) == len(entries):
            return False
        self._write(kept)
        return True
