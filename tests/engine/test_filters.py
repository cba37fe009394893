"""Restore filter queries: Extended JSON values and ``$regex`` select what they say; a malformed
value is a clear refusal (a 422 from the API), never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bmc_pipeline.api.app import create_app
from bmc_pipeline.api.tokens import TokenStore
from bmc_pipeline.config import Settings
from bmc_pipeline.engine.backup import BackupResult
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.restore import RestoreEngine, RestoreFilters, check_query
from bmc_pipeline.engine.store import BackupStore


def _restore(settings: Settings, db: Any, keyring: KeyRing, bid: str, query: str) -> Any:
    engine = RestoreEngine(settings, db, BackupStore(settings.backup_dir), keyring)
    return engine.restore(
        bid, "conversations", target_collection="picked", filters=RestoreFilters(query=query)
    )


def test_extended_json_dates_and_regex_select_the_matching_documents(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, keyring: KeyRing
) -> None:
    convs = list(mock_db["conversations"].find())
    pivot = sorted(c["updated_at"] for c in convs)[len(convs) // 2]
    newer = sum(1 for c in convs if c["updated_at"] >= pivot)
    query = json.dumps({"updated_at": {"$gte": {"$date": pivot.isoformat()}}})
    report = _restore(mock_settings, mock_db, keyring, full_backup.backup_id, query)
    assert report.verified and report.inserted == newer and 0 < newer < len(convs)

    prefix = convs[0]["session_id"][:9]
    mock_db.drop_collection("picked")
    wanted = sum(1 for c in convs if c["session_id"].startswith(prefix))
    query = json.dumps({"session_id": {"$regex": f"^{prefix}"}})
    report = _restore(mock_settings, mock_db, keyring, full_backup.backup_id, query)
    assert report.verified and report.inserted == wanted > 0


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ('{"_id": {"$oid": "zz"}}', "not a valid ObjectId"),
        ('{"session_id": {"$regex": "("}}', "does not compile"),
    ],
)
def test_malformed_values_are_refused_by_name(query: str, says: str) -> None:
    with pytest.raises(BmcError, match=says):
        check_query(query)


def test_the_api_answers_422_not_500_for_a_malformed_object_id(
    mock_settings: Settings, full_backup: BackupResult
) -> None:
    secret, _ = TokenStore.for_settings(mock_settings).create("ops", "admin")
    body = {"target_collection": "conversations", "filters": {"query": {"_id": {"$oid": "zz"}}}}
    with TestClient(create_app(mock_settings), base_url="https://testserver") as client:
        r = client.post(
            "/api/recovery/restore", json=body, headers={"authorization": f"Bearer {secret}"}
        )
    assert r.status_code == 422, r.text
    assert "not a valid ObjectId" in r.text


@pytest.mark.parametrize("value", ["false", 0, "no"])
def test_a_dry_run_flag_that_is_not_a_boolean_is_refused_not_read_as_false(
    mock_settings: Settings, mock_db: Any, full_backup: BackupResult, value: Any
) -> None:
    mock_db.drop_collection("quotes")
    secret, _ = TokenStore.for_settings(mock_settings).create("ops", "admin")
    body = {"target_collection": "quotes", "dry_run": value}
    with TestClient(create_app(mock_settings), base_url="https://testserver") as client:
        r = client.post(
            "/api/recovery/restore", json=body, headers={"authorization": f"Bearer {secret}"}
        )
    assert r.status_code == 422, r.text
    assert mock_db["quotes"].count_documents({}) == 0  # nothing was restored
