"""The embedded server: throwaway instances never outlive the process that started them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from bmc_pipeline.devdb import port_open

STARTER = """
import sys, time
from pathlib import Path
from bmc_pipeline.devdb import ephemeral_server
with ephemeral_server(Path(sys.argv[1]), Path(sys.argv[2])) as s:
    print(s.port, flush=True)
    time.sleep(600)
"""


def test_throwaway_server_dies_when_its_parent_is_killed(
    ferret_binary: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(ferret_binary), str(tmp_path / "db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    assert port_open(port)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_open(port), "the server outlived the process that started it"
