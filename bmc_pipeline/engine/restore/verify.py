"""Pass 3 of a restore: read the target again and prove the writes landed.

Every written document must read back byte for byte, deletions must be gone, and the count must
add up. A complete restore into an empty collection must also reproduce the backup point's state
digest exactly.
"""

from __future__ import annotations

from typing import Any

from bmc_pipeline.engine.digest import StateDigest, document_hash
from bmc_pipeline.engine.rawbson import decode_id, id_element
from bmc_pipeline.engine.restore.plan import PlanFiles
from bmc_pipeline.engine.restore.report import RestoreReport
from bmc_pipeline.engine.restore.write import read_target
from bmc_pipeline.engine.spillmap import SpillMap

MAX_LISTED = 20  # documents named in the report when they do not read back


def verify_restore(
    coll: Any,
    plan: PlanFiles,
    report: RestoreReport,
    *,
    before_count: int,
    expected: StateDigest | None,
    batch_size: int,
    expected_is: str = "backup",
) -> SpillMap:
    """Set ``report.verified`` and say in ``report.verification`` what was compared; returns the
    collection as read (id element -> content hash), what the rollback's check starts from.

    ``expected`` is the backup point's state digest, given only when the restore was complete
    (no filters, not a legacy file) into a collection that was empty; after a replay of captured
    changes, that of the state they lead to (``expected_is`` names it in the report).
    """
    after, digest = read_target(coll, batch_size, plan.dir)
    ok = True
    written = 0
    for name in ("insert", "replace"):
        for raw in plan.read(name):
            written += 1
            if after.get(id_element(raw)) != document_hash(raw):
                ok = False
                if len(report.verification) < MAX_LISTED:
                    report.verification.append(
                        f"document {decode_id(id_element(raw))} does not read back as written"
                    )
    gone = [d for d in plan.read("delete") if id_element(d) in after]
    if gone:
        ok = False
        report.verification.append(f"{len(gone)} deleted document(s) are still there")
    want = before_count + report.inserted - report.deleted
    if len(after) != want:
        ok = False
        report.verification.append(
            f"the collection has {len(after)} documents, expected {want} "
            "(something else wrote to it during the restore?)"
        )
    else:
        report.verification.append(
            f"{written} written document(s) read back byte for byte; count {len(after)} as expected"
        )
    if expected is not None:
        if digest.hexdigest == expected.hexdigest and digest.count == expected.count:
            report.verification.append(
                f"state digest equals the {expected_is}'s ({expected.count} documents, {expected.hexdigest[:23]}...)"
            )
        else:
            ok = False
            report.verification.append(
                f"state digest {digest.hexdigest} ({digest.count} documents) differs from the "
                f"{expected_is}'s {expected.hexdigest} ({expected.count} documents)"
            )
    report.verified = ok
    return after
