"""The Dagster UI, in a real browser, as a new operator uses it after the demo.

``dagster dev`` serves this project's code location on a free loopback port, with a full backup
made beforehand; Chromium from Debian's packages (``make browser`` installs it), driven by
Playwright, loads the asset graph, executes a check alone, reads the partitions and launches a
dry-run restore from the Launchpad. Results are read back from the instance; screenshots are kept
in the test's temporary directory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from bmc_pipeline.assets.backups import partitions_start
from bmc_pipeline.config import Settings
from bmc_pipeline.jobs.history import dagster_home
from bmc_pipeline.launch import run_backup
from bmc_pipeline.run_audit import run_actor
from tests.support import write_config
from tests.support.dagsterui import dagster_dev

CHROMIUM = shutil.which("chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium (Debian package chromium; `make browser` installs it)"
)
# what the machine's closed network needs: no background connections, no sandbox as root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


@pytest.fixture
def ui(mock_settings: Settings, seeded: dict[str, int], tmp_path: Path) -> Iterator[str]:
    home = dagster_home(mock_settings)
    run_backup(mock_settings, "full", include_files=False)
    cfg = write_config(mock_settings, tmp_path / "cfg.json")
    env = {"BMC_CONFIG": str(cfg), "DAGSTER_HOME": str(home.resolve()),
           "BMC_BACKUP_KEY": mock_settings.backup_key or ""}  # fmt: skip
    with dagster_dev(env, tmp_path / "dagster-dev.log") as url:
        yield url


@pytest.fixture
def page(ui: str, tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def _open(page: Any, url: str) -> None:
    """Go to ``url``; close the newsletter prompt a first visit shows, if it is there."""
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip", exact=True)
    if skip.count():
        skip.click()


def _click_when_free(page: Any, button: Any, timeout_s: float = 90) -> None:
    """Click ``button`` once it is enabled and no dialog covers it. The UI can open a dialog of
    its own at any time (the newsletter prompt, a notice); it is closed first, as a person would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.locator(".bp5-overlay-backdrop").count():
            for name in ("Skip", "Close", "Dismiss", "Done"):
                found = page.get_by_role("button", name=name, exact=True)
                if found.count():
                    found.first.click()
                    break
            else:
                page.keyboard.press("Escape")
        elif button.is_enabled():
            button.click(timeout=10_000)
            return
        time.sleep(0.5)
    raise AssertionError(f"the button stayed disabled or covered for {timeout_s:.0f} s")


def _new_run(settings: Settings, before: set[str], timeout_s: float = 180) -> dg.DagsterRun:
    """The run the UI launched (not among ``before``), once it has finished."""
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            new = [r for r in instance.get_runs() if r.run_id not in before]
            if new and new[0].is_finished:
                return new[0]
            time.sleep(1)
    raise AssertionError(f"no run launched from the UI finished within {timeout_s:.0f} s")


def _run_ids(settings: Settings) -> set[str]:
    with dg.DagsterInstance.get() as instance:
        return {r.run_id for r in instance.get_runs()}


def test_an_operator_uses_the_console(
    ui: str, page: Any, mock_settings: Settings, tmp_path: Path
) -> None:
    # the asset graph loads, in its three groups, with no error anywhere on the page
    _open(page, f"{ui}/asset-groups")
    page.get_by_text("full_backups").first.wait_for()
    for group in ("incremental_backups", "maintenance"):
        assert page.get_by_text(group).count() > 0
    _shot(page, tmp_path, "1-asset-graph")
    assert "error" not in page.inner_text("body").lower()
    _open(page, f"{ui}/locations")
    page.get_by_text("bmc_pipeline").first.wait_for()
    assert "error" not in page.inner_text("body").lower()

    # a check executed alone re-validates the stored backup and succeeds
    before = _run_ids(mock_settings)
    _open(page, f"{ui}/assets/backups/full/conversations?view=checks")
    page.get_by_text("archive_integrity").first.wait_for()
    _click_when_free(page, page.get_by_text("Execute", exact=True))
    check_run = _new_run(mock_settings, before)
    _open(page, f"{ui}/runs/{check_run.run_id}")
    page.get_by_text("archive_integrity").first.wait_for()
    _shot(page, tmp_path, "2-check-run")
    assert check_run.status == dg.DagsterRunStatus.SUCCESS, check_run.run_id
    assert check_run.asset_check_selection and not check_run.asset_selection

    # the partitions start at the start date (the day of the oldest backup): none is missing
    _open(page, f"{ui}/assets/backups/full/conversations?view=partitions")
    page.get_by_text("Missing (0)").wait_for()
    _shot(page, tmp_path, "3-partitions")
    first_day = partitions_start(mock_settings).isoformat()
    assert page.get_by_text(first_day).count() > 0

    # the restore Launchpad opens as a dry run; launching it succeeds and writes nothing
    before = _run_ids(mock_settings)
    _open(page, f"{ui}/locations/bmc_pipeline/jobs/restore_job/playground")
    page.get_by_text("No errors").wait_for()
    _shot(page, tmp_path, "4-launchpad")
    _click_when_free(page, page.get_by_role("button", name="Launch Run"))
    restore_run = _new_run(mock_settings, before)
    _open(page, f"{ui}/runs/{restore_run.run_id}")
    page.get_by_text("restore_op").first.wait_for()
    _shot(page, tmp_path, "5-restore-run")
    assert restore_run.job_name == "restore_job"
    assert restore_run.status == dg.DagsterRunStatus.SUCCESS, restore_run.run_id
    assert restore_run.run_config["ops"]["restore_op"]["config"]["dry_run"] is True
    assert run_actor(dict(restore_run.tags)) == "dagster-ui"
