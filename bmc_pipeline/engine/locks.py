"""Advisory locks between processes: one restore per target, and a backup's writer alive.

A lock is an ``flock`` on a small file under ``<backup_dir>/.locks/``. The kernel releases it when
the process that holds it ends, however it ends (a kill, a crash, a lost terminal), so a lock is
never left behind by a dead process and nothing needs a timeout to guess it. The file records who
holds the lock (pid, host, what, since) so that a refusal can say so.

They are held by every process that uses the same backup directory on this machine: the command
line, the API server, Dagster runs and drills. Two machines restoring into one database are not
covered (``flock`` on a network file system is not reliable); run restores from one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from bmc_pipeline.engine.errors import GuardedError

LOCK_DIR = ".locks"


def lock_path(root: Path, kind: str, name: str) -> Path:
    """The lock file of ``name`` (a backup id, ``db.collection``): one plain file name."""
    return root / LOCK_DIR / f"{kind}-{quote(name, safe='')}.lock"


def _holder(path: Path) -> str:
    try:
        who = json.loads(path.read_text())
        return f"pid {who['pid']} on {who['host']} ({who['what']}, since {who['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the ``with`` body; :class:`GuardedError` if it is held.

    The file stays (removing it while another process has it open would let two processes hold
    "the" lock on two different files); its content names the holder. The one exception is a
    backup writer's lock, removed once its temporary directory is gone (see ``store.pending``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GuardedError(f"{what} is locked by {_holder(path)}") from None
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        who = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(who).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (a missing file: no)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def restoring(root: Path, targets: list[str], what: str) -> Iterator[None]:
    """Hold the restore lock of every target (``db.collection``, ``files:<dir>``), or refuse at
    once naming the holder of the first one taken (in sorted order, so the answer is the same
    whichever restore asks)."""
    with contextlib.ExitStack() as held:
        for name in sorted(set(targets)):
            path = lock_path(root, "restore", name)
            try:
                held.enter_context(hold(path, f"{what} of {name}"))
            except GuardedError:
                raise GuardedError(
                    f"{name} is being restored or rolled back by another process: "
                    f"{_holder(path)}. Wait for it to finish (one restore per target at a time), "
                    "then try again"
                ) from None
        yield
