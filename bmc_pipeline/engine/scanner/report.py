"""The scan report: duplicates, conflicts, recoverable conversations, problems and advice, as
JSON (read back by ``recover``) and Markdown.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bmc_pipeline.engine.atomic import write_atomic
from bmc_pipeline.engine.scanner.fold import ConversationFold
from bmc_pipeline.engine.scanner.form import iso_utc
from bmc_pipeline.engine.scanner.mongodb import KEY_BATCH, existing_keys
from bmc_pipeline.engine.scanner.reading import FileReport

REPORT_PLACEHOLDER = "<this report>.json"  # replaced by the real path when the report is written


@dataclass
class ScanReport:
    generated_at: str
    root: str | None
    database: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[FileReport] = field(default_factory=list)
    mongodb: dict[str, Any] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    recoverable: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    date_fields: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = REPORT_FORMAT
        d["date_fields"] = sorted(self.date_fields)
        return d


REPORT_FORMAT = "bmc-recovery-report/3"  # /3: hashes of the scan form (dates as UTC text)


def analyse(
    report: ScanReport, found: ConversationFold, coll: Any | None, nothing_found: str
) -> None:
    """Duplicates, conflicts, what MongoDB lacks, the summary and the recommendations.

    ``nothing_found`` is the advice when a scan found nothing on disk: why, and what to do.
    """
    paths = [f.path for f in report.files]
    recoverable_per_file: dict[str, int] = {}

    def settle(batch: list[list[Any]]) -> None:
        """Report a batch of distinct conversations; MongoDB is asked about them all at once.

        Text (places, times) is made only for what is reported: most conversations of a large
        scan are neither duplicated nor conflicting.
        """
        have = existing_keys(coll, [r[0] for r in batch]) if coll is not None else set()
        for key, copies, versions, places, (session, h, t, file_no, idx) in batch:
            if copies > 1:
                listed = [f"{paths[f]}#{i}" for f, i in sorted(places)]
                report.duplicates.append({"key": key, "copies": copies, "places": listed})
            if len(versions) > 1:
                report.conflicts.append(
                    {
                        "key": key,
                        "versions": len(versions),
                        "newest": f"{paths[file_no]}#{idx}",
                        "newest_time": iso_utc(t),
                    }
                )
            if coll is not None and key not in have:
                path = paths[file_no]
                report.recoverable.append(
                    {"key": key, "session_id": session, "path": path, "index": idx, "hash": h}
                )
                recoverable_per_file[path] = recoverable_per_file.get(path, 0) + 1

    unique = 0
    batch: list[list[Any]] = []
    for group in found.groups():
        batch.append(group)
        if len(batch) == KEY_BATCH:
            settle(batch)
            unique += len(batch)
            batch = []
    settle(batch)
    unique += len(batch)
    for fr in report.files:
        fr.recoverable = recoverable_per_file.get(fr.path, 0)
    errors = [f for f in report.files if f.error]
    report.summary = {
        "files_scanned": len(report.files),
        "files_with_conversations": sum(1 for f in report.files if f.conversations),
        "conversations_found": found.count,
        "unique_conversations": unique,
        "duplicates": len(report.duplicates),
        "conflicts": len(report.conflicts),
        "recoverable": len(report.recoverable) if coll is not None else None,
        "files_with_errors": len(errors),
        "salvaged_files": sum(1 for f in errors if f.salvaged),
    }
    recs = []
    if report.recoverable:
        recs.append(
            f"{len(report.recoverable)} conversation(s) on disk are missing from MongoDB: preview with "
            f"'bmc-backup recover --from-scan {REPORT_PLACEHOLDER} --dry-run', then run it without --dry-run"
        )
    if report.conflicts:
        recs.append(
            f"{len(report.conflicts)} conversation(s) exist in several versions: recover takes the newest; "
            "use --strategy merge to combine them with what MongoDB has"
        )
    if errors:
        recs.append(
            f"{len(errors)} file(s) could not be read completely (see 'files'); conversations before "
            "the damage were kept where possible. Keep the originals until recovery is verified."
        )
    damaged = {n: c["damaged"] for n, c in report.mongodb.items() if c.get("damaged")}
    if damaged:
        said = ", ".join(f"{n}: {k}" for n, k in damaged.items())
        recs.append(
            f"documents in MongoDB fail their collection's required_fields ({said}; ids under "
            "mongodb.<collection>.damaged_ids): restore them from a backup with --session-id or "
            "--query, or mend them"
        )
    if coll is None and unique:
        recs.append(
            f"MongoDB was not consulted: scan with --source all to learn which of the "
            f"{unique} conversation(s) found on disk it lacks"
        )
    if not recs:
        recs.append(
            "nothing to recover: every conversation found on disk is in MongoDB"
            if unique
            else nothing_found
        )
    report.recommendations = recs


def markdown(report: ScanReport) -> str:
    """The report for people."""
    s = report.summary
    lines = [
        "# Recovery scan",
        "",
        f"Generated {report.generated_at}; root `{report.root}`; database `{report.database}`.",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in s.items()],
        "",
        "## Recommendations",
        "",
        *[f"- {r}" for r in report.recommendations],
        "",
    ]
    if report.mongodb:
        lines += [
            "## MongoDB",
            "",
            "| collection | documents | oldest | newest | failing the schema |",
            "|---|---|---|---|---|",
        ]
        for name, c in report.mongodb.items():
            lines.append(
                f"| {name} | {c['count']} | {c.get('oldest') or ''} | {c.get('newest') or ''} "
                f"| {c.get('damaged', 0)} |"
            )
        lines.append("")
        for name, c in report.mongodb.items():
            if c.get("damaged_ids"):
                lines += [f"Failing the schema in {name}:", ""]
                lines += [f"- `{d['_id']}`: {d['reason']}" for d in c["damaged_ids"]]
                lines.append("")
    if report.files:
        lines += [
            "## Files",
            "",
            "| path | size | shape | conversations | recoverable | error |",
            "|---|---|---|---|---|---|",
        ]
        for f in report.files:
            err = (f.error or "") + (
                f" (at byte/char {f.error_offset})" if f.error_offset is not None else ""
            )
            if f.salvaged:
                err += "; earlier conversations kept"
            lines.append(
                f"| `{f.path}` | {f.size} | {f.shape} {f.compressed} | {f.conversations} | {f.recoverable} | {err} |"
            )
        lines.append("")
    if report.conflicts:
        lines += ["## Conflicting versions", ""]
        lines += [
            f"- `{c['key']}`: {c['versions']} versions; newest in `{c['newest']}`"
            for c in report.conflicts[:200]
        ]
        lines.append("")
    if report.problems:
        lines += ["## Not scanned", "", *[f"- {p}" for p in report.problems], ""]
    return "\n".join(lines)


def write_reports(report: ScanReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    j = out_dir / f"recovery_report_{stamp}.json"
    m = out_dir / f"recovery_report_{stamp}.md"
    report.recommendations = [r.replace(REPORT_PLACEHOLDER, str(j)) for r in report.recommendations]
    # a lone surrogate (a broken session id) becomes the six characters \ud800: in JSON text,
    # where it can only be inside a string, that is its own escape, so the report reads back
    # the reports hold conversations' keys and masked samples: readable by their owner only
    text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str)
    write_atomic(j, text.encode("utf-8", "backslashreplace"), mode=0o600)
    write_atomic(m, markdown(report).encode("utf-8", "backslashreplace"), mode=0o600)
    return j, m
