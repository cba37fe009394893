"""The recovery scanner: what is recoverable, in MongoDB and in files scattered on disk.

**Files.** Under a root, the configured directories are walked (without following links) for the
configured name patterns, plain or compressed (``.gz``, ``.zst``), and each file is read as a
stream (:mod:`.reading`) by a pool of workers (:mod:`.workers`). Our own backups met on the way are
read through their manifests (:mod:`.archives`).

**The rule** for "this is a conversation": a JSON object with a string ``session_id`` and a list
``messages``. Its identity is its ``_id`` when it has one, else its ``session_id`` (:mod:`.form`).

**Analysis.** The same conversation found more than once is a duplicate; found with different
contents it is a conflict (the newest, by ``updated_at`` or else its last message, is named). A
conversation MongoDB lacks is *recoverable* (:mod:`.fold`, :mod:`.report`); ``recover`` writes the
newest version of each through the restore engine (:mod:`.recover`).

Where a change goes: a new file format in ``reading``, a new place to look in ``discovery``, what
counts as the same conversation in ``form``, what the report says in ``report``.
"""

from bmc_pipeline.engine.scanner.archives import conversations_of
from bmc_pipeline.engine.scanner.form import (
    canonical,
    content_hash,
    conversation_epoch,
    conversation_key,
    to_document,
)
from bmc_pipeline.engine.scanner.mongodb import mask
from bmc_pipeline.engine.scanner.recover import recoverable_documents
from bmc_pipeline.engine.scanner.report import REPORT_FORMAT, ScanReport, markdown, write_reports
from bmc_pipeline.engine.scanner.scan import scan, scan_settings

__all__ = [
    "REPORT_FORMAT",
    "ScanReport",
    "canonical",
    "content_hash",
    "conversation_epoch",
    "conversation_key",
    "conversations_of",
    "markdown",
    "mask",
    "recoverable_documents",
    "scan",
    "scan_settings",
    "to_document",
    "write_reports",
]
