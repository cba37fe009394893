"""What ``recover`` writes: the newest version of each recoverable conversation of a saved report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import bson.errors
import zstandard

from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError, UnstorableError
from bmc_pipeline.engine.identity import derived_id
from bmc_pipeline.engine.rawbson import BSON_REFUSES
from bmc_pipeline.engine.scanner.archives import conversations_of
from bmc_pipeline.engine.scanner.form import content_hash, to_document
from bmc_pipeline.engine.scanner.report import REPORT_FORMAT


def recoverable_documents(
    report_path: Path, keyring: KeyRing | None = None, missing: list[str] | None = None
) -> Iterator[bytes]:
    """The newest version of each recoverable conversation of a saved report, as BSON.

    A conversation without ``_id`` gets one derived from its session id, so recovering twice
    cannot create two copies. One that BSON cannot hold (a lone surrogate, an integer beyond 64
    bits) stops the recovery with its place named; the restore reads every document before it
    writes any, so nothing has been written then. Entries of the report that are not found as
    they were scanned (the file changed, is gone or cannot be read now) are skipped and, when
    ``missing`` is given, listed there as ``path#index: why``.
    """
    try:
        data = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BmcError(f"{report_path}: cannot read the scan report: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise BmcError(
            f"{report_path} is not a scan report of this version (format "
            f"{data.get('format') if isinstance(data, dict) else None!r}, expected "
            f"{REPORT_FORMAT!r}); scan again with 'bmc-backup scan' and recover from the new report"
        )
    date_fields = frozenset(data.get("date_fields", []))
    wanted: dict[str, dict[int, str]] = {}
    for r in data.get("recoverable", []):
        wanted.setdefault(r["path"], {})[int(r["index"])] = r["hash"]
    for path, indexes in wanted.items():
        found: set[int] = set()
        why = "not found as scanned: the file changed since the scan"
        try:
            for i, conv in enumerate(conversations_of(Path(path), date_fields, keyring)):
                if i in indexes and content_hash(conv) == indexes[i]:
                    found.add(i)
                    yield _storable_bson(to_document(conv, date_fields), path, i, report_path)
        except UnstorableError:
            raise
        except (OSError, ValueError, EOFError, zstandard.ZstdError, BmcError) as exc:
            why = f"cannot be read now: {exc}"
        if missing is not None:
            missing.extend(f"{path}#{i}: {why}" for i in sorted(set(indexes) - found))


def _storable_bson(conv: dict[str, Any], path: str, i: int, report_path: Path) -> bytes:
    try:
        if "_id" not in conv:
            conv = {"_id": derived_id(conv), **conv}
        return bson.encode(conv)
    except BSON_REFUSES as exc:
        raise UnstorableError(
            f"{path}#{i} (session {conv['session_id']!r}) cannot be stored in MongoDB: {exc}; "
            f"nothing was written. Remove its entry from 'recoverable' in {report_path} (or "
            "mend the file) and recover again"
        ) from None
