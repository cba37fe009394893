"""The README's main command works, and works again when run a second time."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmc_pipeline.demo import run_demo
from bmc_pipeline.engine.crypto import Key
from tests.support import make_settings


def test_demo_passes_twice_in_a_row_in_process(
    tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, "mongomock://demo-test", "bmc-cotizaciones", key)
    monkeypatch.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
    for _ in range(2):
        assert run_demo(settings, conversations=120, config_path=None) == 0
        out = capsys.readouterr().out
        assert "demo finished: all checks passed" in out and "FAIL" not in out
