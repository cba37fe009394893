"""What the project writes without a mode of its own is private: the command line and the code
location set umask 077, and the Dagster home (run logs, step outputs) is 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmc_pipeline.cli import PRIVATE_UMASK, main
from bmc_pipeline.config import Settings
from tests.support import write_config


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems have
    try:
        yield
    finally:
        os.umask(old)


def test_the_command_line_makes_new_files_private_and_the_dagster_home_0700(
    mock_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = mock_settings.path(mock_settings.dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # not one an earlier test left in the environment
    home.mkdir(parents=True)
    home.chmod(0o755)  # as an earlier version, or a plain mkdir, left it
    cfg = str(write_config(mock_settings, tmp_path / "config.json"))
    assert main(["--config", cfg, "status", "--json"]) == 0
    assert os.umask(0o022) == PRIVATE_UMASK == 0o077
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    made = [p for p in home.rglob("*") if p.is_file()]
    assert made, "the instance wrote its storage"
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made), [
        (p.name, oct(p.stat().st_mode)) for p in made
    ]
