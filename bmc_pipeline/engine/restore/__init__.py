"""Restores: from a backup point (or a legacy JSON file) into a collection, provably.

Where a change goes:

* which documents (dates, sessions, queries): :mod:`.filters`;
* which backup points (fulls, incrementals, a point in time): :mod:`..chain`;
* what happens to a document that already exists (the strategies): :mod:`.plan`, :mod:`.merge`;
* the undo: :mod:`.rollback`; batched writes: :mod:`.write`; the proof: :mod:`.verify`;
* collection options and indexes: :mod:`.indexes`; the chatbot's files: :mod:`.files`;
* JSON files found on disk: :mod:`.legacy`; the order of it all: :mod:`.engine`.
"""

from bmc_pipeline.engine.chain import collections_at
from bmc_pipeline.engine.restore.engine import (
    FilesRequest,
    RestoreEngine,
    RestoreOptions,
)
from bmc_pipeline.engine.restore.files import FilesRestoreReport
from bmc_pipeline.engine.restore.filters import (
    QUERY_OPERATORS,
    RestoreFilters,
    check_query,
    parse_time,
)
from bmc_pipeline.engine.restore.legacy import legacy_documents, resolve_source
from bmc_pipeline.engine.restore.report import PointRestoreReport, RestoreReport

__all__ = [
    "QUERY_OPERATORS",
    "FilesRequest",
    "FilesRestoreReport",
    "PointRestoreReport",
    "RestoreEngine",
    "RestoreFilters",
    "RestoreOptions",
    "RestoreReport",
    "check_query",
    "collections_at",
    "legacy_documents",
    "parse_time",
    "resolve_source",
]
