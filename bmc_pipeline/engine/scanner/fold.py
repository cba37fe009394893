"""Folding the copies of each conversation into one record: count, places, newest version.

The main process keeps at most ``SPILL_KEYS`` distinct conversations in memory and spills the
rest to files sorted by key, merged as a stream when the report is made.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bmc_pipeline.engine.scanner.form import content_hash, conversation_epoch, conversation_key


class Spool:
    """The conversations a worker finds in a batch of files, folded per conversation, on disk.

    Per distinct key: copies, versions (content hashes), the first ``PLACES_LISTED`` places
    (file number, position) and the newest copy; one JSON array per line. The fold spans the
    files of a batch, which are read in file-number order, so places arrive in the report's order
    and a copy seen in an earlier file of the batch costs a counter, not a line. It is flushed to
    disk every ``FLUSH_KEYS`` distinct keys (a key may then have several lines, which the parent
    merges), so a worker's memory stays bounded however large or varied its files; the parent
    reads a few lines per conversation instead of one per copy.
    """

    FLUSH_KEYS = 20_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("wb")
        self._fold: dict[str, list[Any]] = {}
        self.file_no = 0
        self.count = 0  # conversations of the current file

    def start(self, file_no: int) -> None:
        """Conversations from now on belong to file ``file_no`` (ascending within a spool)."""
        self.file_no, self.count = file_no, 0

    def add(self, conv: dict[str, Any]) -> None:
        """One conversation, in scan form."""
        key = conversation_key(conv)
        h = content_hash(conv)
        idx = self.count
        self.count += 1
        g = self._fold.get(key)
        if g is None:
            t = conversation_epoch(conv)
            place = (self.file_no, idx)
            self._fold[key] = [1, {h}, [place], [conv["session_id"], h, t, *place]]
            if len(self._fold) >= self.FLUSH_KEYS:
                self._flush()
            return
        g[0] += 1
        g[1].add(h)
        if len(g[2]) < PLACES_LISTED:
            g[2].append((self.file_no, idx))
        newest = g[3]
        if h == newest[1]:  # the same content has the same time: a later copy wins a tie
            newest[3], newest[4] = self.file_no, idx
            return
        t = conversation_epoch(conv)
        if (t if t is not None else _NO_TIME) >= (newest[2] if newest[2] is not None else _NO_TIME):
            g[3] = [conv["session_id"], h, t, self.file_no, idx]

    def _flush(self) -> None:
        for key, (copies, versions, places, newest) in self._fold.items():
            self._fh.write(_dump_line([key, copies, sorted(versions), places, newest]))
        self._fold.clear()

    def close(self) -> None:
        self._flush()
        self._fh.close()


_NO_TIME = float("-inf")  # a copy without any time ranks below every dated one


PLACES_LISTED = 20  # places listed per duplicated conversation (all are counted)


class ConversationFold:
    """What the analysis needs of each distinct conversation, folded in record by record.

    A record, as the workers write it, one JSON array per line, is
    ``[key, copies, versions, places, newest]``: how many copies, which versions (content
    hashes), the first places in path order (at most ``PLACES_LISTED`` ``[file, index]``
    pairs) and the newest copy (``[session, hash, epoch, file, index]``). Records of one key are
    folded into the first, so the state is the record itself: a conversation seen once costs
    the parsed line and nothing more. They are folded in as batches finish.

    Memory is bounded: past ``SPILL_KEYS`` distinct conversations the fold is written to a
    temporary file sorted by key and started afresh, and :meth:`groups` merges those files
    (a streaming k-way merge). So a scan of one huge export of distinct conversations holds no
    more than a pile of copies of a few; only the report's own lists grow with what they list.
    """

    SPILL_KEYS = 50_000

    def __init__(self, tmp_dir: Path) -> None:
        self.by_key: dict[str, list[Any]] = {}
        self.count = 0
        self._tmp = tmp_dir
        self._runs: list[Path] = []

    def load(self, spool: Path) -> None:
        if not spool.exists():
            return
        by_key = self.by_key
        with spool.open("rb") as fh:
            for line in fh:
                record = _load_line(line)
                self.count += record[1]
                _fold_record(by_key, record)
                if len(by_key) >= self.SPILL_KEYS:
                    self._spill()
        spool.unlink()

    def _spill(self) -> None:
        path = self._tmp / f"found{len(self._runs)}.jsonl"
        with path.open("wb") as fh:
            for key in sorted(self.by_key):
                record = self.by_key[key]
                record[3].sort()  # places ascend in every record
                fh.write(_dump_line(record))
        self._runs.append(path)
        self.by_key.clear()

    def groups(self) -> Iterator[list[Any]]:
        """The folded record of every distinct conversation, in key order."""
        if not self._runs:
            for key in sorted(self.by_key):
                yield self.by_key[key]
            return
        self._spill()
        merged = heapq.merge(*(_records(run) for run in self._runs), key=_first)
        for key, records in itertools.groupby(merged, key=_first):
            one: dict[str, list[Any]] = {}
            for record in records:
                _fold_record(one, record)
            yield one[key]


def _first(record: list[Any]) -> Any:
    return record[0]


def _records(path: Path) -> Iterator[list[Any]]:
    with path.open("rb") as fh:
        for line in fh:
            yield _load_line(line)


def _dump_line(record: list[Any]) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except orjson.JSONEncodeError:  # a lone surrogate in a session id
        return json.dumps(record).encode() + b"\n"


def _load_line(line: bytes) -> list[Any]:
    """A line of :func:`_dump_line`; the standard library reads what orjson refuses (a lone
    surrogate, escaped as ``\\ud800``)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = json.loads(line)
    assert isinstance(record, list)
    return record


def _rank(newest: list[Any]) -> tuple[float, int, int]:
    """Which copy is newer: by time, then the later place (no two copies share a place)."""
    t = newest[2]
    return (t if t is not None else _NO_TIME, newest[3], newest[4])


def _fold_record(by_key: dict[str, list[Any]], record: list[Any]) -> None:
    """Fold one record (see :class:`ConversationFold`) into the record ``by_key`` has for its key."""
    g = by_key.get(record[0])
    if g is None:
        by_key[record[0]] = record
        return
    g[1] += record[1]
    versions = g[2]
    if len(versions) + len(record[2]) > 16:  # many versions: no quadratic membership tests
        g[2] = sorted(set(versions).union(record[2]))
    else:
        for v in record[2]:
            if v not in versions:
                versions.append(v)
    places = g[3]
    # a full list is sorted; places of a record ascend, so one that starts after the last place
    # listed has nothing to add
    if len(places) < PLACES_LISTED or record[3][0] < places[-1]:
        places.extend(record[3])
        if len(places) >= PLACES_LISTED:
            places.sort()
            del places[PLACES_LISTED:]
    if _rank(record[4]) > _rank(g[4]):
        g[4] = record[4]
