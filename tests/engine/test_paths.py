"""No path out of the store: names read from a manifest (archive files, blob ids, file paths) are
checked before they become paths. Each manifest here is crafted with the key (correctly signed),
as a thief of the key or a compromised remote copy could."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupEngine, BackupResult
from bmc_pipeline.engine.crypto import KeyRing, manifest_mac
from bmc_pipeline.engine.errors import BmcError, GuardedError, IntegrityError
from bmc_pipeline.engine.export import export_collection
from bmc_pipeline.engine.remote import RemoteStore
from bmc_pipeline.engine.restore import RestoreEngine
from bmc_pipeline.engine.retention import RetentionPolicy, delete_backup, rotate
from bmc_pipeline.engine.store import BackupRef, BackupStore, canonical_json
from bmc_pipeline.engine.validate import validate_backup


def _resign(ref: BackupRef, keyring: KeyRing, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(ref.manifest_path.read_text())
    change(doc)
    body = {k: v for k, v in doc.items() if k != "authentication"}
    doc["authentication"]["mac"] = manifest_mac(keyring.primary, canonical_json(body))
    ref.manifest_path.write_text(json.dumps(doc))


def _archive_to(target: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["collections"]["quotes"]["documents"]["file"] = target

    return change


def _blob_to(target: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        first = next(iter(doc["filesystem"]["files"].values()))
        first["blob"] = target

    return change


@pytest.mark.parametrize(
    "target",
    ["../../../outside.bson", "/etc/passwd", "2026-01-01/backup_full_x/quotes.bson.zst.enc",
     "other_backup_dir/quotes.bson.zst.enc"],
)  # fmt: skip
def test_an_archive_named_outside_its_backup_is_refused_by_every_reader(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, keyring: KeyRing, target: str
) -> None:
    store = BackupStore(mock_settings.backup_dir)
    ref = full_backup.ref
    _resign(ref, keyring, _archive_to(target))
    report = validate_backup(store, ref, keyring)
    assert not report.ok and report.errors
    out = Path(mock_settings.backup_dir).parent / "export.bson"
    with pytest.raises(IntegrityError):
        export_collection(store, ref, keyring, "quotes", "bson", out)
    assert not out.exists()
    mock_db.drop_collection("quotes")
    with pytest.raises(IntegrityError):
        RestoreEngine(mock_settings, mock_db, store, keyring).restore(ref.backup_id, "quotes")
    assert mock_db["quotes"].count_documents({}) == 0


def test_deleting_a_backup_with_a_crafted_manifest_removes_only_its_own_files(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, keyring: KeyRing
) -> None:
    store = BackupStore(mock_settings.backup_dir)
    ref = full_backup.ref
    sentinel = (ref.manifest_path.parent / "../../outside.bson").resolve()
    sentinel.write_text("not the store's")
    _resign(ref, keyring, _archive_to("../../outside.bson"))
    later = BackupEngine(mock_settings, mock_db, store, keyring).run("full", include_files=False)
    with pytest.raises(GuardedError):  # the guards read the crafted manifest: it is unreadable
        delete_backup(store, keyring, ref.backup_id)
    ref.payload_dir.joinpath("x").touch()
    store.delete(ref)  # what delete does once the guards allow it: the id's own paths only
    assert sentinel.read_text() == "not the store's"
    assert not ref.manifest_path.exists() and not ref.payload_dir.exists()
    assert [r.backup_id for r in store.refs()] == [later.backup_id]


def test_a_blob_id_that_is_a_path_stops_push_pull_and_rotate_before_any_effect(
    mock_settings: Settings, full_backup: BackupResult, keyring: KeyRing, tmp_path: Path
) -> None:
    secret = tmp_path / "local_secret.txt"
    secret.write_text("not for the remote")
    store = BackupStore(mock_settings.backup_dir)
    ref = full_backup.ref
    remote = RemoteStore(f"file://{tmp_path / 'offsite'}")
    remote.push(store, ref, keyring)  # the honest copy, for pull below

    _resign(ref, keyring, _blob_to("../../../local_secret.txt"))
    with pytest.raises(IntegrityError, match="not a blob id"):
        remote.push(store, ref, keyring)
    assert not list((tmp_path / "offsite").rglob("local_secret.txt"))  # nothing uploaded

    result = rotate(
        store, keyring, RetentionPolicy(daily=1, weekly=0, monthly=0), dry_run=False, grace_s=0
    )
    assert result.unreadable and not result.deleted and secret.exists()

    # the remote copy's manifest is the crafted one now; a pull refuses it before writing
    remote_manifest = tmp_path / "offsite" / ref.manifest_path.relative_to(store.root)
    remote_manifest.write_text(ref.manifest_path.read_text())
    fresh = BackupStore(tmp_path / "new_machine")
    with pytest.raises(IntegrityError, match="not a blob id"):
        remote.pull(fresh, ref.backup_id, keyring)
    assert not (tmp_path / "new_machine").exists() or not list(
        (tmp_path / "new_machine").rglob("*")
    )


# -- fuzz: random changes to a signed manifest give refusals, never a crash ----------------------
_junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=40), st.sampled_from(["../../x", "/etc/passwd", "a" * 64, "..", ""]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)  # fmt: skip


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_mutated_signed_manifest_is_refused_or_read_never_a_crash(
    mock_settings: Settings, full_backup: BackupResult, keyring: KeyRing, data: st.DataObject
) -> None:
    store = BackupStore(mock_settings.backup_dir)
    ref = full_backup.ref
    original = ref.manifest_path.read_text()
    doc = json.loads(original)
    body = {k: v for k, v in doc.items() if k != "authentication"}
    where = data.draw(st.sampled_from([p for p in _paths(body) if p]))
    parent = body
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(_junk)
    doc = {**body, "authentication": doc["authentication"]}
    doc["authentication"]["mac"] = manifest_mac(keyring.primary, canonical_json(body))
    outside = set(Path(mock_settings.backup_dir).parent.parent.iterdir())
    ref.manifest_path.write_text(json.dumps(doc))
    try:
        with contextlib.suppress(BmcError):  # a refusal is fine; any other exception is not
            store.load_manifest(ref, keyring)
        validate_backup(store, ref, keyring)  # reports, never raises
    finally:
        ref.manifest_path.write_text(original)
    assert set(Path(mock_settings.backup_dir).parent.parent.iterdir()) == outside
