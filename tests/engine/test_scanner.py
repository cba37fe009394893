"""The recovery scanner on a tree with every shape found in practice, against a real server."""

from __future__ import annotations

import copy
import gzip
import json
import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard
from bson import ObjectId, json_util

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.scanner import (
    content_hash,
    conversation_epoch,
    conversations_of,
    fold,
    progress,
    reading,
    scan,
    write_reports,
)
from bmc_pipeline.engine.scanner import workers as scan_workers

T = datetime(2026, 11, 1, tzinfo=timezone.utc)


def conv(
    name: str, *, with_id: bool = True, hours: int = 0, status: str = "open"
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "session_id": f"sess-{name}",
        "user": {"name": "Lucía", "phone": "+598 91 234 567"},
        "status": status,
        "messages": [
            {"role": "user", "content": f"hola {name}", "timestamp": T, "message_id": f"{name}-0"}
        ],
        "created_at": T,
        "updated_at": T + timedelta(hours=hours),
    }
    if with_id:
        d = {"_id": ObjectId(f"{sum(map(ord, name)):024x}"), **d}
    return d


def ej(value: Any) -> str:
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


def build_tree(root: Path) -> Path:
    """Every shape found in practice: arrays, nesting, NDJSON, compressed, cut short, binary..."""
    for d in ("backups", "exportaciones", "exports", "data", ".whatsapp_temp"):
        (root / d).mkdir(parents=True)
    A, B, C, D, E = (conv(x) for x in "ABCDE")
    files: dict[str, str | bytes] = {
        "backups/backup_conversations_a.json": ej([A, B, C]),
        "exportaciones/export_nested.json": ej({"data": {"conversations": [D, E]}, "exported": T}),
        "exports/conversation_single.json": ej(conv("F", with_id=False)),
        "data/conversations_log.ndjson": ej(conv("G")) + "\n{not json\n" + ej(conv("H")) + "\n",
        "backup_envelope.json": ej({"backup_metadata": {"backup_type": "full"},
                                    "collections": {"conversations": [conv("J"), conv("A", hours=5, status="closed")]}}),
        "backup_truncated.json": ("[" + ej(conv("K")) + ",\n" + ej(conv("L")) + ',\n{"session_id": "sess-Z", "mess'),
        "kb_populated_x.json": json.dumps({"productos": [{"sku": "ISODEC"}]}),
        "unrelated.json": ej([conv("N")]),  # matches no pattern: not scanned
        "backups/backup_empty.json": "",
        "backups/backup_binary.json": b"\x00\x01\x02binary",
        "backups/backup_badutf8.json": b'[{"session_id": "\xff\xfe"}]',
        "backups/backup_deep.json": "[" * 100_000,
    }  # fmt: skip
    for rel, content in files.items():
        p = root / rel
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    with gzip.open(root / ".whatsapp_temp/backup_wa.json.gz", "wt") as fh:
        fh.write(ej([C, conv("I")]))
    (root / "export_zst.json.zst").write_bytes(
        zstandard.ZstdCompressor().compress(ej([conv("M")]).encode())
    )
    (root / "backups" / "loop").symlink_to(root / "backups")  # a directory link loop
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "chatbot")


def test_scan_job_writes_both_reports_and_attaches_the_summary(
    mock_settings: Settings, tree: Path, tmp_path: Path, key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from bmc_pipeline.definitions import build_definitions

    s = mock_settings
    monkeypatch.setenv("BMC_BACKUP_KEY", s.backup_key or "")
    out = tmp_path / "scan-out"
    cfg = {"ops": {"scan_op": {"config": {"root": str(tree), "output_dir": str(out)}}}}
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(s)
            .resolve_job_def("scan_job")
            .execute_in_process(run_config=cfg, instance=instance)
        )
    assert result.success
    summary = result.output_for_node("scan_op")
    assert summary["conversations_found"] == 15 and summary["recoverable"] == 13  # empty database
    assert len(list(out.glob("recovery_report_*.json"))) == 1
    assert len(list(out.glob("recovery_report_*.md"))) == 1


def test_exports_written_with_default_str_are_read_back_faithfully(
    tmp_path: Path, settings: Settings, mongo_db: Any
) -> None:
    # json.dumps(default=str) turns ObjectIds and dates into plain text: a common export
    present, new = conv("P"), conv("Q")
    mongo_db["conversations"].insert_one(present)
    root = tmp_path / "r"
    root.mkdir()
    (root / "backup_plain.json").write_text(json.dumps([present, new], default=str))
    report = scan(
        root=root,
        directories=["."],
        patterns=settings.scanner.patterns,
        db=mongo_db,
        collections={},
        date_fields=frozenset({"created_at", "updated_at"}),
        workers=1,
    )
    assert report.summary["conversations_found"] == 2
    assert [r["session_id"] for r in report.recoverable] == ["sess-Q"]  # P is recognised as present
    json_path, _ = write_reports(report, tmp_path / "out")
    import bson

    from bmc_pipeline.engine.scanner import recoverable_documents

    opts = bson.CodecOptions(tz_aware=True)
    (doc,) = [bson.decode(d, codec_options=opts) for d in recoverable_documents(json_path)]
    assert doc["_id"] == new["_id"] and doc["created_at"] == T
    assert doc["messages"][0]["timestamp"] == T


def test_our_own_backups_are_read_through_their_manifests_with_the_key(
    tmp_path: Path, settings: Settings, mongo_db: Any, key: Any
) -> None:
    import bson

    from bmc_pipeline.engine.backup import BackupEngine
    from bmc_pipeline.engine.crypto import KeyRing
    from bmc_pipeline.engine.scanner import recoverable_documents
    from bmc_pipeline.engine.store import BackupStore

    convs = [conv(x) for x in "RSTUV"]
    mongo_db["conversations"].insert_many(convs)
    root = tmp_path / "chatbot"
    ring = KeyRing([key])
    cfg = settings.collections["conversations"]
    s = settings.model_copy(update={"collections": {"conversations": cfg}})
    BackupEngine(s, mongo_db, BackupStore(root / "backups"), ring).run("full", include_files=False)
    mongo_db["conversations"].delete_many({"session_id": {"$in": ["sess-S", "sess-V"]}})

    def run(keyring: Any) -> Any:
        return scan(root=root, directories=["backups"], patterns=settings.scanner.patterns,
                    db=mongo_db, collections={}, workers=1, keyring=keyring)  # fmt: skip

    without = run(None)
    (fr,) = without.files
    assert fr.shape == "bmc_pipeline backup" and "backup key" in (fr.error or "")
    report = run(ring)
    assert report.summary["conversations_found"] == 5
    assert sorted(r["session_id"] for r in report.recoverable) == ["sess-S", "sess-V"]
    json_path, _ = write_reports(report, tmp_path / "out")
    docs = [bson.decode(d) for d in recoverable_documents(json_path, ring)]
    assert sorted(d["session_id"] for d in docs) == ["sess-S", "sess-V"]


@pytest.mark.parametrize("micros", [0, 94_000, 123_456])
def test_an_exported_conversation_hashes_like_the_one_in_mongodb(micros: int) -> None:
    """A conversation written with json.dumps(default=str), or as ISO text in another time zone,
    is the same version as the document in MongoDB, and recovers to exactly that document."""
    from bmc_pipeline.engine.scanner import (
        canonical,
        content_hash,
        conversation_epoch,
        to_document,
    )

    at = datetime(2026, 10, 23, 15, 26, 58, micros, tzinfo=timezone.utc)
    in_db = {
        "_id": ObjectId("069aeafcc3345dcaf45410a1"),
        "session_id": "s-1",
        "created_at": at,
        "messages": [
            {"role": "user", "content": "hola", "timestamp": at},
            {"role": "assistant", "content": "¿en qué te ayudo?", "timestamp": at},
        ],
    }
    dates = frozenset({"created_at", "updated_at"})
    exported = json.loads(json.dumps(in_db, default=str))
    assert exported["messages"][0]["timestamp"] == str(at)
    elsewhere = json.loads(json.dumps(in_db, default=str))
    montevideo = at.astimezone(timezone(timedelta(hours=-3)))
    elsewhere["messages"][1]["timestamp"] = montevideo.isoformat()  # 'T', -03:00
    elsewhere["created_at"] = at.isoformat().replace("+00:00", "Z")
    mongo_form = canonical(copy.deepcopy(in_db), dates)
    for other in (exported, elsewhere):
        form = canonical(other, dates)
        assert content_hash(form) == content_hash(mongo_form)
        assert conversation_epoch(form) == conversation_epoch(mongo_form) == at.timestamp()
        assert to_document(form, dates) == in_db
    # a date in another shape than the scan form's is another version
    changed = canonical(json.loads(json.dumps(in_db, default=str)), dates)
    changed["messages"][0]["timestamp"] = str(at + timedelta(seconds=1))
    assert content_hash(changed) != content_hash(mongo_form)


def test_text_shaped_like_a_date_that_is_not_one_stays_text() -> None:
    """The scan form never changes text of the date shape, and recovery keeps what is not a date."""
    from bmc_pipeline.engine.scanner import canonical, conversation_epoch, to_document

    odd = "2026-13-45 99:00:00+00:00"  # the shape, not a date
    conv = {
        "session_id": "s",
        "updated_at": "yesterday",
        "messages": [
            {"timestamp": odd},
            {"timestamp": "2026-10-23 15:26:58+00:00"},
            {"timestamp": None},
            "not a message",
        ],
    }
    form = canonical(copy.deepcopy(conv), frozenset({"updated_at"}))
    assert form == conv
    # the latest real date is used; the odd text sorts above it but is not a date
    assert (
        conversation_epoch(form)
        == datetime(2026, 10, 23, 15, 26, 58, tzinfo=timezone.utc).timestamp()
    )
    # a date that stayed a datetime (a field not read as a date) without an offset is UTC
    naive = {"session_id": "s", "messages": [], "updated_at": datetime(2026, 10, 23, 15, 26, 58)}
    assert (
        conversation_epoch(naive)
        == datetime(2026, 10, 23, 15, 26, 58, tzinfo=timezone.utc).timestamp()
    )
    doc = to_document(form, frozenset({"updated_at"}))
    assert doc["messages"][0]["timestamp"] == odd and doc["updated_at"] == "yesterday"
    assert doc["messages"][1]["timestamp"] == datetime(
        2026, 10, 23, 15, 26, 58, tzinfo=timezone.utc
    )


def test_parallel_batches_give_the_same_report_as_one_process(
    tree: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batches of one file each, every file goes through the worker pool and the fold."""

    def run(workers: int) -> dict[str, Any]:
        report = scan(
            root=tree,
            directories=settings.scanner.directories,
            patterns=settings.scanner.patterns,
            db=None,
            collections={},
            workers=workers,
        ).as_dict()
        return {k: v for k, v in report.items() if k != "generated_at"}

    one = run(1)
    monkeypatch.setattr(scan_workers, "_BATCH_BYTES", 1)
    assert len(scan_workers.batches_of([("a", 0), ("b", 1)], [tree, tree])) == 2  # a file per task
    two = run(2)
    assert two == one
    # from a thread (as in the API or a Dagster step) workers come from a fork server
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        in_thread = pool.submit(run, 2).result()
        assert pool.submit(lambda: scan_workers._mp_context().get_start_method()).result() == (
            "forkserver"
        )
    assert in_thread == one
    assert one["summary"]["conversations_found"] == 15 and len(one["duplicates"]) == 2
    # the main process spilling its fold to sorted files every 2 conversations, and merging them
    monkeypatch.setattr(fold.ConversationFold, "SPILL_KEYS", 2)
    monkeypatch.setattr(fold.Spool, "FLUSH_KEYS", 1)
    assert run(1) == one


def test_malformed_extended_json_keeps_its_conversation_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid ``$oid`` or ``$date`` stays what the file says; an unforeseen failure in one
    file is that file's error, and the other files are still scanned."""

    root = tmp_path / "r"
    root.mkdir()
    (root / "backup_bad_ejson.json").write_text(
        '[{"_id": {"$oid": "zz"}, "session_id": "a", "messages": []},'
        ' {"session_id": "b", "messages": [{"timestamp": {"$date": "soon"}}]},'
        ' {"session_id": "c", "messages": [{"timestamp": {"$date": "2026-11-01T00:00:00Z"}}]}]'
    )
    (root / "backup_fine.json").write_text(ej([conv("A")]))

    def run() -> Any:
        return scan(root=root, directories=["."], patterns=["backup*.json"], db=None,
                    collections={}, workers=1)  # fmt: skip

    report = run()
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["backup_bad_ejson.json"].conversations == 3
    assert by_name["backup_bad_ejson.json"].error is None
    keys = {g["key"] for g in report.duplicates} | {g["key"] for g in report.conflicts}
    assert not keys and report.summary["unique_conversations"] == 4
    (conv_c,) = [
        c
        for c in conversations_of(root / "backup_bad_ejson.json", frozenset())
        if c["session_id"] == "c"
    ]
    assert conv_c["messages"][0]["timestamp"] == "2026-11-01 00:00:00+00:00"  # scan form

    real_canonical = reading.canonical

    def explode(conv: dict[str, Any], dates: frozenset[str]) -> dict[str, Any]:
        if conv["session_id"] == "b":
            raise LookupError("something nobody foresaw")
        return real_canonical(conv, dates)

    monkeypatch.setattr(reading, "canonical", explode)
    report = run()
    by_name = {Path(f.path).name: f for f in report.files}
    bad = by_name["backup_bad_ejson.json"]
    assert bad.error == "could not be read: LookupError: something nobody foresaw"
    assert bad.salvaged and bad.conversations == 1  # "a", before the failure
    assert (
        by_name["backup_fine.json"].conversations == 1 and by_name["backup_fine.json"].error is None
    )


@pytest.mark.parametrize("spill_keys", [3, 50_000])
@pytest.mark.parametrize("seed", range(12))
def test_the_fold_of_many_copies_matches_a_plain_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_keys: int, seed: int
) -> None:
    """Copies folded per batch of files, batches arriving in any order, with or without spilling:
    copies, versions, the first 20 places in path order and the newest copy are those of all
    copies taken together."""
    import random

    monkeypatch.setattr(fold.ConversationFold, "SPILL_KEYS", spill_keys)
    rng = random.Random(seed)
    times = [None, "2026-11-01 10:00:00+00:00", "2026-11-02 10:00:00+00:00"]
    keys = rng.choice([2, 4, 10])  # few keys: lists of places fill up in many ways
    # (file, index, key, version); a version's content, and so its time, is fixed
    copies = [
        (f, i, rng.randrange(keys), rng.randint(0, 2))
        for f in range(60)
        for i in range(rng.choice([0, 1, 2, 5, 9]))
    ]

    def conversation(key: int, version: int) -> dict[str, Any]:
        c: dict[str, Any] = {
            "_id": f"k{key}",
            "session_id": f"s{key}",
            "messages": [],
            "v": version,
        }
        if times[version] is not None:
            c["updated_at"] = times[version]
        return c

    files = list(range(60))
    rng.shuffle(files)
    found = fold.ConversationFold(tmp_path)
    step = rng.choice([1, 3, 7])
    for n in range(0, 60, step):
        batch = sorted(files[n : n + step])
        spool = fold.Spool(tmp_path / f"s{n}.jsonl")
        for f in batch:
            spool.start(f)
            for _, _, key, version in sorted(c for c in copies if c[0] == f):
                spool.add(conversation(key, version))
        spool.close()
        found.load(spool.path)
    got = {r[0]: r for r in found.groups()}
    assert list(got) == sorted(got)
    assert found.count == len(copies)
    for key in {c[2] for c in copies}:
        mine = [c for c in copies if c[2] == key]
        _, n, versions, places, (session, h, t, f, i) = got[f'_id:"k{key}"']
        assert n == len(mine)
        assert sorted(versions) == sorted({content_hash(conversation(key, v)) for *_, v in mine})
        assert [tuple(p) for p in sorted(places)] == sorted((c[0], c[1]) for c in mine)[:20]

        def rank(c: tuple[int, int, int, int], key: int = key) -> tuple[float, int, int]:
            e = conversation_epoch(conversation(key, c[3]))
            return (e if e is not None else float("-inf"), c[0], c[1])

        best = max(mine, key=rank)
        assert (f, i, session) == (best[0], best[1], f"s{key}")
        assert h == content_hash(conversation(key, best[3]))
        assert t == conversation_epoch(conversation(key, best[3]))


def test_exports_of_naive_dates_match_extended_json_even_without_configured_date_fields(
    tmp_path: Path, settings: Settings
) -> None:
    """pymongo hands out naive datetimes unless asked otherwise, so ``default=str`` exports often
    carry dates with no offset; the Extended JSON export of the same documents must still be the
    same version, also when the configuration names no date fields for conversations."""
    from bmc_pipeline.config import CollectionSettings
    from bmc_pipeline.engine.scanner import scan_settings

    naive = T.replace(tzinfo=None)
    docs = []
    for name in "ABC":
        d = conv(name)
        d["created_at"] = d["updated_at"] = naive
        d["messages"][0]["timestamp"] = naive
        docs.append(d)
    root = tmp_path / "files"
    (root / "backups").mkdir(parents=True)
    (root / "backups" / "backup_plain.json").write_text(json.dumps(docs, default=str))
    assert (
        '"created_at": "2026-11-01 00:00:00"'
        in (root / "backups" / "backup_plain.json").read_text()
    )
    (root / "backups" / "backup_ejson.json").write_text(json_util.dumps(docs))
    bare = settings.model_copy(update={"collections": {"conversations": CollectionSettings()}})
    report = scan_settings(bare, source="filesystem", root=root)
    assert report.summary["conversations_found"] == 6
    assert report.summary["duplicates"] == 3 and report.summary["conflicts"] == 0
    assert {"created_at", "updated_at"} <= report.date_fields


def test_a_scan_that_read_no_files_says_why_and_what_to_do(
    tmp_path: Path, settings: Settings, mongo_db: Any
) -> None:
    from bmc_pipeline.engine.scanner import scan_settings

    only_db = scan_settings(settings, source="mongodb", db=mongo_db)
    assert only_db.root is None and only_db.files == []
    assert only_db.recommendations == [
        "files were not scanned: scan with --source all (or filesystem) to look for "
        "conversations on disk that MongoDB lacks"
    ]
    # the configured files root is gone: the MongoDB part still runs, the report says so
    gone = settings.model_copy(
        update={"files": settings.files.model_copy(update={"root": str(tmp_path / "gone")})}
    )
    report = scan_settings(gone, source="all", db=mongo_db)
    assert report.problems[0].startswith(
        f"the files root {tmp_path / 'gone'} (files.root) does not exist"
    )
    assert report.recommendations == [report.problems[0]]
    assert set(report.mongodb) == set(settings.collections)
    # a root with none of the directories or names looked for: say where the scan looked
    (tmp_path / "elsewhere" / "deeper" / "backups").mkdir(parents=True)
    (tmp_path / "elsewhere" / "deeper" / "backups" / "backup_x.json").write_text(ej([conv("A")]))
    empty = scan_settings(settings, source="filesystem", root=tmp_path / "elsewhere")
    assert empty.files == [] and len(empty.recommendations) == 1
    assert empty.recommendations[0].startswith(
        f"no file to scan under {tmp_path / 'elsewhere'}: the scan looks in backups/, "
    )
    assert "point --root at the directory that holds those folders" in empty.recommendations[0]


def test_values_orjson_refuses_are_still_scanned(
    tmp_path: Path, mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone surrogate (in the session id, which travels through the spool files), NaN and an
    integer beyond 64 bits: the standard library reads them, and the scan counts them. BSON
    cannot hold the surrogate or the integer: recovering stops before writing, naming the place."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "backup_surrogate.json").write_text('[{"session_id": "\\ud800", "messages": []}]')
    (root / "backup_odd_numbers.json").write_text(
        '[{"session_id": "n", "messages": [], "score": NaN, "big": 123456789012345678901234567890}]'
    )

    monkeypatch.setattr(scan_workers, "_BATCH_BYTES", 1)  # a task per file: workers=2 uses the pool
    for n in (1, 2):
        report = scan(root=root, directories=["."], patterns=["backup*.json"], db=None,
                      collections={}, workers=n)  # fmt: skip
        assert [(Path(f.path).name, f.conversations, f.error) for f in report.files] == [
            ("backup_odd_numbers.json", 1, None),
            ("backup_surrogate.json", 1, None),
        ]
        assert report.summary["unique_conversations"] == 2
    from bmc_pipeline.engine.errors import BmcError
    from bmc_pipeline.engine.scanner import recoverable_documents

    report = scan(root=root, directories=["."], patterns=["backup*.json"], db=mongo_db,
                  collections={}, workers=1)  # fmt: skip
    assert report.summary["recoverable"] == 2
    json_path, _ = write_reports(report, tmp_path / "out")
    with pytest.raises(
        BmcError, match=r"backup_odd_numbers.json#0 \(session 'n'\) cannot be stored"
    ):
        list(recoverable_documents(json_path))


@pytest.mark.timeout(60)
def test_cut_short_or_corrupt_compressed_files_and_named_pipes(tmp_path: Path) -> None:
    """A gzip or zstd copy interrupted half way gives up the conversations before the cut;
    corrupt data is named; several gzip members are one file; a named pipe with a matching
    name is reported, not opened (opening it would wait for a writer forever)."""
    import os

    root = tmp_path / "r"
    root.mkdir()
    import random

    rng = random.Random(5)
    convs = [conv(f"c{i}") for i in range(400)]
    for c in convs:  # text that does not compress to nothing: several zstd blocks
        c["messages"][0]["content"] = "".join(rng.choice("abcdefghij ") for _ in range(800))
    raw = ej(convs).encode()
    assert len(raw) > 3 * 128 * 1024
    gz = gzip.compress(raw)
    (root / "backup_cut.json.gz").write_bytes(gz[: len(gz) // 2])
    zst = zstandard.ZstdCompressor().compress(raw)
    (root / "backup_cut.json.zst").write_bytes(zst[: len(zst) // 2])
    (root / "backup_members.json.gz").write_bytes(
        gzip.compress(raw[:500]) + gzip.compress(raw[500:])
    )
    (root / "backup_corrupt.json.gz").write_bytes(gz[:10] + bytes(200) + gz[210:])
    os.mkfifo(root / "backup_pipe.json")

    report = scan(root=root, directories=["."], patterns=["backup*.json"], db=None,
                  collections={}, workers=1)  # fmt: skip
    files = {Path(f.path).name: f for f in report.files}
    assert set(files) == {"backup_cut.json.gz", "backup_cut.json.zst", "backup_members.json.gz",
                          "backup_corrupt.json.gz"}  # fmt: skip
    for name, kind in (("backup_cut.json.gz", "gzip"), ("backup_cut.json.zst", "zstd")):
        f = files[name]
        assert 0 < f.conversations < 400 and f.salvaged, (name, f)
        assert f.error is not None and f.error.startswith(f"the {kind} file is cut short after ")
    assert files["backup_members.json.gz"].conversations == 400
    assert files["backup_members.json.gz"].error is None
    corrupt = files["backup_corrupt.json.gz"]
    assert corrupt.error is not None and corrupt.error.startswith(
        "corrupt gzip data near compressed byte"
    )
    assert report.problems == [
        f"{root / 'backup_pipe.json'}: not a regular file (a named pipe, socket or device), not read"
    ]


def test_a_byte_order_mark_is_not_damage(tmp_path: Path) -> None:
    """Windows tools begin UTF-8 files with a BOM; arrays and NDJSON read the same with one."""
    root = tmp_path / "r"
    root.mkdir()
    bom = b"\xef\xbb\xbf"
    (root / "backup_bom.json").write_bytes(bom + ej([conv("A"), conv("B")]).encode())
    (root / "backup_bom.ndjson").write_bytes(
        bom + (ej(conv("C")) + "\n" + ej(conv("D")) + "\n").encode()
    )
    report = scan(root=root, directories=["."], patterns=["backup*.json"], db=None,
                  collections={}, workers=1)  # fmt: skip
    assert [(Path(f.path).name, f.shape, f.conversations, f.error) for f in report.files] == [
        ("backup_bom.json", "array", 2, None),
        ("backup_bom.ndjson", "ndjson", 2, None),
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_told_bytes_read_up_to_all_of_them(
    tree: Path, settings: Settings, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(
        progress.ProgressReporter, "INTERVAL_S", 0.0
    )  # every read reaches the reporter
    monkeypatch.setattr(scan_workers, "_BATCH_BYTES", 1)  # a batch per file: several tasks
    calls: list[tuple[int, int]] = []
    report = scan(root=tree, directories=settings.scanner.directories,
                  patterns=settings.scanner.patterns, db=None, collections={},
                  workers=workers, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    total = sum(f.size for f in report.files)
    assert calls and all(t == total for _, t in calls)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # never goes back
    if workers == 1:  # read in this process: told as the files are read, not only at the end
        assert len({d for d, _ in calls}) > 2


def test_the_progress_bar_draws_on_a_terminal_and_writes_tenths_elsewhere() -> None:
    import io

    from bmc_pipeline.progress import ProgressBar

    log = io.StringIO()
    bar = ProgressBar("reading files", stream=log)
    for done in range(0, 101, 5):
        bar(done * 1_000_000, 100_000_000)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("... reading files  10%  10.0 of 100.0 MB")
    assert lines[-1].startswith("... reading files 100%  100.0 of 100.0 MB")

    emitted: list[str] = []
    ProgressBar("read files:", emit=emitted.append)(50, 100)
    assert len(emitted) == 1 and emitted[0].startswith("read files:  50%")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = ProgressBar("reading files", stream=term)
    bar(25, 100)
    bar(100, 100)
    out = term.getvalue()
    assert out.startswith("\r... [#######.......................] reading files  25%")
    assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 1


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_input_expands_a_bounded_amount_at_a_time(tmp_path: Path, kind: str) -> None:
    """A small compressed file of a great deal of white space (a compression bomb, or a very
    padded export) is decompressed a slice at a time, not all into memory at once."""

    path = tmp_path / f"backup_padded.json.{'gz' if kind == 'gzip' else 'zst'}"
    spaces = b" " * (1 << 20)
    with path.open("wb") as fh:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=fh, mode="wb") as w:
                for _ in range(96):
                    w.write(spaces)
        else:
            with zstandard.ZstdCompressor().stream_writer(fh) as z:
                for _ in range(96):
                    z.write(spaces)
    assert path.stat().st_size < 200_000  # 96 MB of spaces
    reader = reading._Decompressed(path, kind)
    total = held = 0
    while chunk := reader.read(1 << 20):
        total += len(chunk)
        held = max(held, len(reader._out))
    assert total == 96 << 20
    assert held < 40 << 20  # one feed's worth, not the 96 MB the file expands to


def test_samples_mask_phone_numbers_and_addresses_written_into_messages() -> None:
    from bmc_pipeline.engine.scanner import mask

    text = (
        "escribime a juan.perez@example.com.uy o al +598 99 123 456 o (099) 123-456; "
        "total USD 37,108.56 el 2026-10-25, pedido 1234567"
    )
    doc = {
        "messages": [{"content": text}],
        "user": {"phone": "+598 91 234 567", "email": "ana@x.com"},
    }
    masked = mask(doc, {"phone", "email", "name"})
    assert masked["messages"][0]["content"] == (
        "escribime a j***@example.com.uy o al +*** ** *** *56 o (***) ***-*56; "
        "total USD 37,108.56 el 2026-10-25, pedido 1234567"  # prices, dates, short numbers kept
    )
    assert masked["user"] == {"phone": "+*** ** *** *67", "email": "a***@x.com"}
    assert doc["messages"][0]["content"] == text  # the document itself is not changed


@pytest.mark.timeout(120)
def test_a_worker_that_dies_costs_only_the_file_that_killed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (for want of memory, say) on one file: the other files, also those of its
    batch, are read again one by one; the report names the file that was lost."""
    import os

    root = tmp_path / "r"
    root.mkdir()
    for name in "ABCDEF":
        (root / f"backup_{name}.json").write_text(ej([conv(name), conv(name + "2")]))
    (root / "backup_killer.json").write_text(ej([conv("A"), conv("KILL")]))

    real = reading.canonical

    def die_on_kill(c: dict[str, Any], dates: frozenset[str]) -> dict[str, Any]:
        if c["session_id"] == "sess-KILL":
            os._exit(9)  # as the kernel's out-of-memory killer would end it
        return real(c, dates)

    monkeypatch.setattr(reading, "canonical", die_on_kill)  # workers are forked: they see it
    # forked whatever threads an earlier test left running (a forkserver child would not see
    # the patch and would read the killer file whole)
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(scan_workers, "_mp_context", lambda: fork)
    monkeypatch.setattr(scan_workers, "_BATCH_BYTES", 1500)  # a few files per batch
    report = scan(root=root, directories=["."], patterns=["backup*.json"], db=None,
                  collections={}, workers=2)  # fmt: skip
    files = {Path(f.path).name: f for f in report.files}
    assert set(files) == {f"backup_{n}.json" for n in "ABCDEF"} | {"backup_killer.json"}
    assert files["backup_killer.json"].error == scan_workers._READER_DIED
    assert files["backup_killer.json"].conversations == 0
    assert all(files[f"backup_{n}.json"].conversations == 2 for n in "ABCDEF")
    assert all(files[f"backup_{n}.json"].error is None for n in "ABCDEF")
    assert report.summary["conversations_found"] == 12


def test_every_stored_document_is_checked_against_its_schema_and_damaged_ones_named(
    settings: Settings, mongo_db: Any
) -> None:
    """One streaming pass over all of a collection, not its first 200 documents."""
    from bmc_pipeline.engine.scanner import scan_settings

    good = [{"_id": ObjectId(), **conv(f"ok{i}", with_id=False)} for i in range(260)]
    broken = {**conv("late"), "_id": ObjectId(b"late-broken!"), "messages": "not a list"}
    missing = {k: v for k, v in conv("nosession").items() if k != "session_id"}  # a distinct _id
    mongo_db["conversations"].insert_many([*good, broken, missing])
    report = scan_settings(settings, source="mongodb", collection="conversations", db=mongo_db)
    c = report.mongodb["conversations"]
    assert c["checked"] == 262 and c["damaged"] == 2
    by_id = {d["_id"]: d["reason"] for d in c["damaged_ids"]}
    assert by_id[str(broken["_id"])] == "field 'messages' is not of type array"
    assert by_id[str(missing["_id"])] == "missing required field 'session_id'"
    assert any("fail their collection's required_fields" in r for r in report.recommendations)
