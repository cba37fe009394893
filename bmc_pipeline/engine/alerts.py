"""Alerts and where they go: e-mail (SMTP), Slack and Discord webhooks, and a JSON-lines log file.

Every channel is tried for every alert, each with retries and backoff; one failing channel never
keeps the others from delivering, and its failure is itself recorded (in the result and the log
file). Secrets (SMTP password, webhook URLs) come from the environment through the settings.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from bmc_pipeline.engine.records import append_record

SEVERITY_ICON = {"critical": "🔴", "warning": "🟠", "resolved": "✅", "info": "📋"}


@dataclass(frozen=True)
class Alert:
    """One thing a person should know about: an incident opening or resolving."""

    key: str  # identifies the incident, e.g. "stale:conversations"
    severity: str  # critical | warning | resolved | info (the daily report)
    title: str
    text: str
    collection: str | None = None
    backup_id: str | None = None
    run_url: str | None = None
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def lines(self) -> list[str]:
        out = [self.text]
        if self.collection:
            out.append(f"Collection: {self.collection}")
        if self.backup_id:
            out.append(f"Backup: {self.backup_id}")
        out.append(f"When: {self.at}")
        if self.run_url:
            out.append(f"Run: {self.run_url}")
        return out

    @property
    def headline(self) -> str:
        return (
            f"{SEVERITY_ICON.get(self.severity, '')} [{self.severity.upper()}] {self.title}".strip()
        )


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


@dataclass
class SmtpChannel:
    host: str
    port: int
    sender: str
    recipients: list[str]
    security: str = "starttls"  # starttls | ssl | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    name: str = "email"

    def send(self, alert: Alert) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"[bmc_pipeline] {alert.headline}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content("\n".join(alert.lines()))
        context = ssl.create_default_context()
        if self.security == "ssl":
            with smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            ) as s:
                self._deliver(s, msg)
        else:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as s:
                if self.security == "starttls":
                    s.starttls(context=context)
                self._deliver(s, msg)

    def _deliver(self, s: smtplib.SMTP, msg: EmailMessage) -> None:
        if self.username:
            s.login(self.username, self.password or "")
        s.send_message(msg)


def _post_json(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    req = urllib.request.Request(  # noqa: S310  the URL is the operator's configured webhook
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "bmc_pipeline"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
        if resp.status >= 300:
            raise OSError(f"webhook answered HTTP {resp.status}")


@dataclass
class SlackChannel:
    """A Slack incoming webhook: ``{"text": ...}`` with a headline and the details."""

    url: str = field(repr=False)
    timeout_s: float = 10.0
    name: str = "slack"

    def send(self, alert: Alert) -> None:
        text = f"*{alert.headline}*\n" + "\n".join(alert.lines())
        _post_json(self.url, {"text": text}, self.timeout_s)


@dataclass
class DiscordChannel:
    """A Discord webhook: ``{"content": ...}`` (at most 2,000 characters)."""

    url: str = field(repr=False)
    timeout_s: float = 10.0
    name: str = "discord"

    def send(self, alert: Alert) -> None:
        content = f"**{alert.headline}**\n" + "\n".join(alert.lines())
        _post_json(self.url, {"content": content[:2000]}, self.timeout_s)


@dataclass
class LogFileChannel:
    """One JSON object per line, appended; rotated past ``rotate_bytes`` (see records.py)."""

    path: Path
    name: str = "log"
    rotate_bytes: int | None = None

    def send(self, alert: Alert) -> None:
        record = {"type": "alert", **asdict(alert)}
        append_record(self.path, record, rotate_bytes=self.rotate_bytes)


@dataclass
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None


class Notifier:
    """Sends each alert to every channel, retrying each independently."""

    def __init__(
        self,
        channels: list[Channel],
        *,
        attempts: int = 3,
        backoff_s: float = 1.0,
        failure_log: Path | None = None,
        rotate_bytes: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.channels = channels
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.failure_log = failure_log
        self.rotate_bytes = rotate_bytes
        self.sleep = sleep

    def send(self, alert: Alert) -> list[Delivery]:
        results = []
        for ch in self.channels:
            error = None
            for attempt in range(1, self.attempts + 1):
                try:
                    ch.send(alert)
                    results.append(Delivery(ch.name, True, attempt))
                    break
                except (OSError, smtplib.SMTPException, urllib.error.URLError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if attempt < self.attempts:
                        self.sleep(self.backoff_s * 2 ** (attempt - 1))
            else:
                results.append(Delivery(ch.name, False, self.attempts, error))
                self._record_failure(ch.name, alert, error or "")
        return results

    def _record_failure(self, channel: str, alert: Alert, error: str) -> None:
        if self.failure_log is None:
            return
        record = {"type": "delivery_failed", "channel": channel, "alert": alert.key,
                  "error": error, "at": datetime.now(timezone.utc).isoformat()}  # fmt: skip
        append_record(self.failure_log, record, rotate_bytes=self.rotate_bytes)
