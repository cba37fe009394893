"""The embedded MongoDB-compatible server: FerretDB v1.24.2 with its SQLite handler.

Used by the demo and the integration tests, never in production. It is built from the FerretDB Go
module into ``<tools_dir>/bin/ferretdb`` once and reused. A plain ``go install`` of v1.24.2 gives a
binary that panics at start ("Invalid build/version/version.txt file content"): the release build
writes that file, the module leaves it out. So we download the module with the Go toolchain, write
``build/version/version.txt`` as the panic message says, and ``go build`` the same command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bmc_pipeline.engine.errors import DevServerError

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
REPLICA_SET = "rs0"
# the emulated oplog's cap: FerretDB drops the oldest tenth each minute while it holds more. It
# answers every read of its oplog by going through all of it, so a larger cap (more history for a
# capture that was down) makes each of capture's reads slower (docs/PERFORMANCE.md)
OPLOG_BYTES = 64 << 20


def _say(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to send SIGTERM when the parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def ferretdb_binary(tools_dir: Path) -> Path:
    return tools_dir / "bin" / "ferretdb"


def installed_version(binary: Path) -> str | None:
    if not binary.is_file():
        return None
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return None


def install(tools_dir: Path, *, say: Callable[[str], None] = _say) -> Path:
    """Build FerretDB into ``tools_dir`` unless the right version is there already."""
    binary = ferretdb_binary(tools_dir)
    if installed_version(binary) == FERRETDB_VERSION:
        return binary
    go = shutil.which("go")
    if not go:
        raise DevServerError(
            "Go is not installed, so the embedded FerretDB server cannot be built; install Go "
            "(https://go.dev/dl/) or point MONGODB_URI at a MongoDB server"
        )
    say(f"building FerretDB {FERRETDB_VERSION} into {binary} (a few minutes the first time)...")
    try:
        dl = subprocess.run(
            [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
            capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        mod_dir = Path(json.loads(dl.stdout)["Dir"])
        src = tools_dir / "src" / f"ferretdb-{FERRETDB_VERSION}"
        if src.exists():
            shutil.rmtree(src)
        shutil.copytree(mod_dir, src)
        for p in [src, *src.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)  # the module cache is read-only
        (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [go, "build", "-trimpath", "-o", str(binary.resolve()), "./cmd/ferretdb"],
            cwd=src, capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise DevServerError(f"building FerretDB failed:\n{exc.stderr[-2000:]}") from None
    except subprocess.TimeoutExpired:
        raise DevServerError("building FerretDB took too long and was stopped") from None
    if installed_version(binary) != FERRETDB_VERSION:
        raise DevServerError(f"{binary} was built but does not report version {FERRETDB_VERSION}")
    say(f"FerretDB {FERRETDB_VERSION} installed at {binary}")
    return binary


@dataclass
class DevServer:
    """One FerretDB process on 127.0.0.1:``port`` keeping its SQLite files in ``data_dir``."""

    binary: Path
    data_dir: Path
    port: int
    # started as replica set "rs0" with a capped local.oplog.rs: FerretDB then keeps its emulated
    # oplog, which continuous capture tails (every write also writes an oplog entry)
    oplog: bool = False

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "ferretdb.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "ferretdb.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def start(self, *, timeout_s: float = 30.0, die_with_parent: bool = False) -> str:
        """Start the server (or find it running) and wait until it answers; returns its URI.

        With ``die_with_parent`` (throwaway servers of tests and benchmarks) the kernel stops the
        server when this process dies, even by SIGKILL, so no server outlives a killed run.
        """
        if self.running():
            return self.uri
        if port_open(self.port):
            raise DevServerError(
                f"port {self.port} on 127.0.0.1 is taken by another program; set devdb.port in "
                "backup_config.json to a free port, or stop that program"
            )
        if not self.binary.is_file():
            raise DevServerError(f"{self.binary} does not exist; run 'bmc-backup devdb install'")
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "state").mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir.resolve() / 'sqlite'}/",
            f"--state-dir={self.data_dir.resolve() / 'state'}",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ]
        if self.oplog:
            args.append(f"--repl-set-name={REPLICA_SET}")
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise DevServerError(f"FerretDB exited at start (code {proc.returncode}):\n{tail}")
            if port_open(self.port):
                if self.oplog:
                    self.ensure_oplog()
                return self.uri
            time.sleep(0.1)
        self.stop()
        raise DevServerError(
            f"FerretDB did not listen on port {self.port} within {timeout_s:.0f} s"
        )

    def ensure_oplog(self) -> None:
        """Create the capped ``local.oplog.rs`` FerretDB logs writes into, once."""
        import pymongo

        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, directConnection=True, serverSelectionTimeoutMS=10_000
        )
        try:
            if "oplog.rs" not in client["local"].list_collection_names():
                client["local"].create_collection("oplog.rs", capped=True, size=OPLOG_BYTES)
        finally:
            client.close()

    def stop(self, *, timeout_s: float = 10.0) -> bool:
        """Stop the server if it runs; returns whether one was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap it if it is our child
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            except OSError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        return {
            "running": self.running(),
            "pid": self.pid(),
            "uri": self.uri,
            "data_dir": str(self.data_dir),
            "binary": str(self.binary),
            "version": installed_version(self.binary),
        }


@contextlib.contextmanager
def ephemeral_server(binary: Path, data_dir: Path, *, oplog: bool = False) -> Iterator[DevServer]:
    """A throwaway server on a free port, stopped when the block ends (for tests and benchmarks)."""
    server = DevServer(binary=binary, data_dir=data_dir, port=free_port(), oplog=oplog)
    server.start(die_with_parent=True)
    try:
        yield server
    finally:
        server.stop()
