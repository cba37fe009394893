"""Order-independent digest of a collection's state.

The digest is the sum, modulo 2**256, of the SHA-256 of every document's raw BSON. A sum does not
depend on the order documents come in, and it can be updated without a rescan: an incremental
backup subtracts what was deleted or replaced and adds the new versions. A restore into an empty
collection must reproduce the digest recorded at backup time exactly; that is what "verified" means.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_MOD = 1 << 256
PREFIX = "sum256:"


def document_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


@dataclass
class StateDigest:
    """A running (count, sum) over document hashes."""

    count: int = 0
    total: int = 0

    def add(self, raw: bytes) -> None:
        self.add_hash(document_hash(raw))

    def add_hash(self, h: bytes) -> None:
        self.count += 1
        self.total = (self.total + int.from_bytes(h, "big")) % _MOD

    def remove_hash(self, h: bytes) -> None:
        self.count -= 1
        self.total = (self.total - int.from_bytes(h, "big")) % _MOD

    @property
    def hexdigest(self) -> str:
        return PREFIX + format(self.total, "064x")

    @classmethod
    def parse(cls, count: int, text: str) -> StateDigest:
        if not text.startswith(PREFIX) or len(text) != len(PREFIX) + 64:
            raise ValueError(f"not a state digest: {text!r}")
        return cls(count=count, total=int(text[len(PREFIX) :], 16))

    def as_dict(self) -> dict[str, object]:
        return {"documents": self.count, "digest": self.hexdigest}
