"""The scanner's main scenario against a real server: a tree with every shape of file found in
practice, three conversations in MongoDB, then ``recover`` (dry run, for real, again, rolled back,
and after a file vanished).

The scenario runs once (module-scoped) and records what each step returned; each test checks one
step, so a step that goes wrong does not hide the others.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bmc_pipeline.cli import main
from bmc_pipeline.engine.crypto import Key
from bmc_pipeline.engine.mongo import connect
from bmc_pipeline.engine.scanner import ScanReport, scan, write_reports
from tests.engine.test_scanner import build_tree, conv
from tests.support import make_settings, write_config


@dataclass
class Scenario:
    report: ScanReport
    md: str
    runs: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # exit, stdout, stderr
    counts: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)

    def out(self, step: str) -> dict[str, Any]:
        code, stdout, _ = self.runs[step]
        assert code == 0, self.runs[step]
        result: dict[str, Any] = json.loads(stdout)
        return result


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("scan")
    db_name = f"bmc_scan_{os.getpid()}"
    settings = make_settings(tmp, mongo_uri, db_name, Key(os.urandom(32)))
    db = connect(mongo_uri)[db_name]
    tree = build_tree(tmp / "chatbot")
    db["conversations"].insert_many([conv("A"), conv("B"), conv("E")])
    env = pytest.MonkeyPatch()  # module-scoped: undone below
    try:
        report = scan(root=tree, directories=settings.scanner.directories,
                      patterns=settings.scanner.patterns, db=db,
                      collections={"conversations": "updated_at"},
                      sensitive={"phone", "name"}, workers=2)  # fmt: skip
        json_path, md_path = write_reports(report, tmp / "reports")
        sc = Scenario(report, md_path.read_text())
        cfg = str(write_config(settings, tmp / "cfg.json"))
        env.setenv("BMC_BACKUP_KEY", settings.backup_key or "")
        recover = ["--config", cfg, "recover", "--from-scan", str(json_path)]
        count = db["conversations"].count_documents
        sc.runs["dry_run"] = _run([*recover, "--dry-run", "--json"])
        sc.counts["after_dry_run"] = count({})
        sc.runs["recover"] = _run([*recover, "--json"])
        sc.counts["after_recover"] = count({})
        sc.counts["sess-F"] = count({"session_id": "sess-F"})
        sc.runs["again"] = _run([*recover, "--json"])
        rollback_id = json.loads(sc.runs["recover"][1] or "{}").get("rollback_id", "")
        sc.runs["rollback"] = _run(["--config", cfg, "rollback", str(rollback_id), "--json"])
        sc.counts["after_rollback"] = count({})
        # a file gone since the scan
        rec = json.loads(json_path.read_text())["recoverable"]
        gone = Path(rec[0]["path"])
        sc.lost = sorted(f"{gone}#{r['index']}" for r in rec if r["path"] == str(gone))
        gone.unlink()
        sc.runs["partial"] = _run([*recover, "--dry-run", "--json"])
        sc.runs["partial_text"] = _run([*recover, "--dry-run"])
        yield sc
    finally:
        env.undo()
        connect(mongo_uri).drop_database(db_name)


def test_the_summary_counts_every_shape_exactly(scenario: Scenario) -> None:
    s = scenario.report.summary
    assert s["files_scanned"] == 13
    assert s["conversations_found"] == 15
    assert s["unique_conversations"] == 13
    assert s["duplicates"] == 2  # C twice with one content, A twice with two
    assert s["conflicts"] == 1
    assert s["recoverable"] == 10
    assert s["files_with_errors"] == 6 and s["salvaged_files"] == 2


def test_each_file_is_read_as_far_as_it_goes(scenario: Scenario) -> None:
    by_name = {Path(f.path).name: f for f in scenario.report.files}
    assert "unrelated.json" not in by_name
    counts = {n: f.conversations for n, f in by_name.items()}
    assert counts == {
        "backup_conversations_a.json": 3, "export_nested.json": 2, "conversation_single.json": 1,
        "conversations_log.ndjson": 2, "backup_wa.json.gz": 2, "backup_envelope.json": 2,
        "backup_truncated.json": 2, "export_zst.json.zst": 1, "kb_populated_x.json": 0,
        "backup_empty.json": 0, "backup_binary.json": 0, "backup_badutf8.json": 0, "backup_deep.json": 0,
    }  # fmt: skip


def test_each_damaged_file_says_what_is_wrong(scenario: Scenario) -> None:
    by_name = {Path(f.path).name: f for f in scenario.report.files}
    errors = {n: f.error or "" for n, f in by_name.items() if f.error}
    assert set(errors) == {"conversations_log.ndjson", "backup_truncated.json", "backup_empty.json",
                           "backup_binary.json", "backup_badutf8.json", "backup_deep.json"}  # fmt: skip
    truncated = errors["backup_truncated.json"]
    assert "cut short" in truncated or "invalid JSON" in truncated
    assert by_name["backup_truncated.json"].error_offset is not None
    assert "binary" in errors["backup_binary.json"] and "UTF-8" in errors["backup_badutf8.json"]
    assert "empty" in errors["backup_empty.json"] and "deep" in errors["backup_deep.json"]


def test_the_newest_copy_of_a_conflict_is_named_and_samples_are_masked(
    scenario: Scenario,
) -> None:
    conflict = scenario.report.conflicts[0]
    assert conflict["newest"].split("#")[0].endswith("backup_envelope.json")
    sample = scenario.report.mongodb["conversations"]["samples"][0]
    assert sample["user"]["phone"].endswith("67") and "234" not in sample["user"]["phone"]
    assert "## Recommendations" in scenario.md and "recover --from-scan" in scenario.md


def test_recover_dry_run_writes_nothing(scenario: Scenario) -> None:
    dry = scenario.out("dry_run")
    assert dry["inserted"] == 10 and dry["rollback_id"] is None
    assert scenario.counts["after_dry_run"] == 3


def test_recover_writes_what_is_missing_once(scenario: Scenario) -> None:
    done = scenario.out("recover")
    assert done["inserted"] == 10 and done["verified"] and done["not_found"] == []
    assert scenario.counts["after_recover"] == 13 and scenario.counts["sess-F"] == 1
    assert scenario.out("again")["inserted"] == 0  # a second recover finds nothing new


def test_a_recover_rolls_back(scenario: Scenario) -> None:
    assert scenario.out("rollback")["verified"]
    assert scenario.counts["after_rollback"] == 3


def test_a_file_gone_since_the_scan_is_named_and_the_rest_recovered(scenario: Scenario) -> None:
    partial = scenario.out("partial")
    assert partial["inserted"] == 10 - len(scenario.lost)
    assert [m.split(": ")[0] for m in partial["not_found"]] == scenario.lost
    assert all(": cannot be read now: " in m for m in partial["not_found"])
    code, _, err = scenario.runs["partial_text"]
    assert code == 0
    assert f"warning: {len(scenario.lost)} conversation(s) of the report were not recovered" in err
