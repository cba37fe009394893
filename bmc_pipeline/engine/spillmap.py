"""A bytes -> bytes map whose memory stays flat: a dict while small, a temporary SQLite file after.

A restore looks documents up by ``_id`` in three maps (what the target holds, what the backup point
holds, what was read back); each has one entry per document, so a million-document restore would
hold hundreds of MB in dictionaries. Past ``limit`` entries the map moves into a temporary SQLite
table and memory stops growing.

The file holds no ``_id`` in clear: keys are BLAKE2b digests under a random key that lives only in
this process (16 bytes: a collision needs about 2^64 ids), and values are content hashes. So a map
can answer "what is stored for this id", but cannot list its ids; code that needs the ids streams
them from the encrypted plan files instead. The file is created with mode 0600 and removed when
the map is closed or collected.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path

DEFAULT_LIMIT = 50_000  # entries kept in a dict (about 10 MB) before spilling to disk
_FLUSH = 10_000  # inserts buffered before one executemany


def _remove(db: sqlite3.Connection, path: str) -> None:
    db.close()
    Path(path).unlink(missing_ok=True)


class SpillMap:
    """``key -> value`` for byte strings, with ``get``, ``in``, ``[]=``, ``pop``, ``len``."""

    def __init__(
        self, items: Iterable[tuple[bytes, bytes]] = (), *, limit: int | None = None,
        directory: Path | None = None,
    ) -> None:  # fmt: skip
        self.limit = DEFAULT_LIMIT if limit is None else limit
        self.directory = directory
        self._dict: dict[bytes, bytes] | None = {}
        self._db: sqlite3.Connection | None = None
        self._secret = os.urandom(32)
        self._pending: list[tuple[bytes, bytes]] = []
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        for k, v in items:
            self[k] = v

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def _key(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, key=self._secret, digest_size=16).digest()

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix=".spill-", suffix=".sqlite", dir=self.directory)
        os.close(fd)  # mkstemp made it 0600
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # a scratch file: nothing to recover after a crash, so no journal and no fsync
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE m (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self._db = db
        self._finalizer = weakref.finalize(self, _remove, db, path)
        assert self._dict is not None
        self._pending = [(self._key(k), v) for k, v in self._dict.items()]
        self._dict = None
        self._flush()

    def _flush(self) -> None:
        if self._pending and self._db is not None:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO m VALUES (?, ?)", self._pending)
            self._db.execute("COMMIT")
            self._pending = []

    def _row(self, key: bytes) -> bytes | None:
        assert self._db is not None
        self._flush()
        row = self._db.execute("SELECT v FROM m WHERE k = ?", (self._key(key),)).fetchone()
        return None if row is None else bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self._dict is not None:
            self._dict[key] = value
            if len(self._dict) > self.limit:
                self._spill()
            return
        self._pending.append((self._key(key), value))
        if len(self._pending) >= _FLUSH:
            self._flush()

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if self._dict is not None:
            return self._dict.get(key, default)
        found = self._row(key)
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        if self._dict is not None:
            return key in self._dict
        return self._row(key) is not None

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if self._dict is not None:
            return self._dict.pop(key, default)
        found = self._row(key)
        if found is None:
            return default
        assert self._db is not None
        self._db.execute("DELETE FROM m WHERE k = ?", (self._key(key),))
        return found

    def __len__(self) -> int:
        if self._dict is not None:
            return len(self._dict)
        assert self._db is not None
        self._flush()
        (n,) = self._db.execute("SELECT count(*) FROM m").fetchone()
        return int(n)

    def __bool__(self) -> bool:
        return len(self) > 0

    def clear(self) -> None:
        self.close()
        self._dict, self._pending = {}, []

    def close(self) -> None:
        """Remove the file, if the map spilled (also done when the map is collected)."""
        if self._finalizer is not None:
            self._finalizer()
        self._db = self._finalizer = None
        self._dict = self._dict if self._dict is not None else {}
