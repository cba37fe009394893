"""What the database benchmarks share: a server, settings, and sample conversations."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.devdb import ephemeral_server, ferretdb_binary
from bmc_pipeline.engine.sample_data import generate

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def server_uri(tmp: Path) -> Iterator[str]:
    """``MONGODB_URI`` if set, else a throwaway FerretDB stopped at the end."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    with ephemeral_server(ferretdb_binary(ROOT / ".tools"), tmp / "db") as server:
        yield server.uri


def server_name() -> str:
    return os.environ.get("MONGODB_URI") or "FerretDB (SQLite)"


def bench_settings(
    uri: str,
    database: str,
    backup_dir: Path,
    collections: list[str] | None = None,
    **env: str,
) -> Settings:
    """The project's settings for a benchmark; ``collections`` (if given) are configured like
    ``conversations`` instead of the chatbot's five; ``env`` adds environment overrides."""
    s = load_settings(
        env={
            "BMC_CONFIG": str(ROOT / "backup_config.json"),
            "MONGODB_URI": uri,
            "BMC_DATABASE": database,
            "BMC_BACKUP_DIR": str(backup_dir),
            **env,
        }
    )
    if collections is None:
        return s
    cfg = s.collections["conversations"]
    return s.model_copy(update={"collections": dict.fromkeys(collections, cfg)})


def load_conversations(db: Any, name: str, n: int, seed: int) -> None:
    """``n`` sample conversations (about 1.8 KB of BSON each) into a fresh collection."""
    coll = db[name]
    coll.drop()
    buf = []
    for c, doc in generate(n, seed=seed):
        if c == "conversations":
            buf.append(doc)
            if len(buf) == 2000:
                coll.insert_many(buf, ordered=False)
                buf = []
    if buf:
        coll.insert_many(buf, ordered=False)


def peak_rss_mib() -> float:
    """This process's peak resident memory, in MiB.

    Read from ``VmHWM`` rather than ``getrusage``: on Linux ``ru_maxrss`` survives ``execve``, so a
    child process would report its parent's high-water mark at the time of the fork.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def in_child(module: str, *args: str) -> list[str]:
    """Run ``python -m <module> <args>`` (the benchmark's own child mode); its output's words.

    Children measure what must not include the parent's state: peak memory above all.
    """
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=True
    )
    return out.stdout.split()
