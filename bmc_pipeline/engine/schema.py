"""A collection's ``required_fields`` (backup_config.json) checked on raw BSON, without decoding.

Restores refuse (and quarantine) documents that fail it; the scanner lists the stored documents that
fail it, by id.
"""

from __future__ import annotations

from collections.abc import Mapping

from bmc_pipeline.engine.rawbson import TYPE_BYTES, top_level


def invalid_reason(raw: bytes, required: Mapping[str, str]) -> str | None:
    """Why a document fails the collection's ``required_fields``, or None."""
    if not required:
        return None
    fields = top_level(raw)
    for name, type_name in required.items():
        if name not in fields:
            return f"missing required field {name!r}"
        if fields[name][0] not in TYPE_BYTES[type_name]:
            return f"field {name!r} is not of type {type_name}"
    return None
