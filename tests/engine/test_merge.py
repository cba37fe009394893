"""The merge strategy loses nothing: arrays of sub-documents are unioned by an identity found in
the data (the configured key, ``_id``, ``id``, ``message_id``, ``uuid``, or the whole element)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bmc_pipeline.engine.restore.merge import identity_key, merge_documents

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_elements_identified_by_id_are_unioned_and_merged() -> None:
    current = {"_id": 1, "items": [{"id": 1, "sku": "ISODEC", "qty": 2}]}
    backup = {"_id": 1, "items": [{"id": 1, "sku": "ISODEC", "note": "x"}, {"id": 2, "sku": "PIR"}]}
    merged = merge_documents(current, backup, timestamp_field=None, merge_keys={})
    assert merged["items"] == [
        {"id": 1, "sku": "ISODEC", "qty": 2, "note": "x"},
        {"id": 2, "sku": "PIR"},
    ]


def test_message_id_is_found_without_configuration_and_time_order_is_kept() -> None:
    m = [{"message_id": f"m{i}", "timestamp": T0 + timedelta(minutes=i)} for i in range(4)]
    current = {"_id": 1, "messages": [m[0], m[3]]}
    backup = {"_id": 1, "messages": [m[1], m[0], m[2]]}
    merged = merge_documents(current, backup, timestamp_field=None, merge_keys={})
    assert merged["messages"] == m


def test_the_configured_key_comes_first_and_another_common_key_is_used_when_it_is_missing() -> None:
    cur = [{"uuid": "u1", "id": 9}]
    bak = [{"uuid": "u2", "id": 9}]
    assert identity_key(cur, bak, "uuid") == "uuid"
    assert identity_key(cur, bak, "message_id") == "id"  # not carried by every element
    assert identity_key([{"a": 1}], [{"b": 2}], None) is None


def test_key_less_arrays_are_unioned_by_whole_elements() -> None:
    current = {"_id": 1, "notes": [{"text": "llamar"}, {"text": "cotizar", "by": "ana"}]}
    backup = {"_id": 1, "notes": [{"by": "ana", "text": "cotizar"}, {"text": "enviar"}]}
    merged = merge_documents(current, backup, timestamp_field=None, merge_keys={})
    assert merged["notes"] == [
        {"text": "llamar"},
        {"text": "cotizar", "by": "ana"},
        {"text": "enviar"},
    ]


def test_a_conversation_keyed_otherwise_than_configured_keeps_both_sides_messages() -> None:
    """The case that used to drop messages: the configured key is message_id, the data uses _id."""
    current = {"_id": 1, "messages": [{"_id": "a", "content": "hola"}]}
    backup = {"_id": 1, "messages": [{"_id": "b", "content": "perdido"}]}
    merged = merge_documents(
        current, backup, timestamp_field=None, merge_keys={"messages": "message_id"}
    )
    assert [m["content"] for m in merged["messages"]] == ["hola", "perdido"]


def test_arrays_of_scalars_are_a_conflict_that_the_newer_side_wins() -> None:
    current = {"_id": 1, "updated_at": T0, "tags": ["a"]}
    backup = {"_id": 1, "updated_at": T0 + timedelta(hours=1), "tags": ["b"]}
    merged = merge_documents(current, backup, timestamp_field="updated_at", merge_keys={})
    assert merged["tags"] == ["b"]


# -- the property: no leaf of either side is lost when nothing conflicts (rule 4 replaces only) ----
_scalar = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
_key_style = st.sampled_from(["message_id", "id", "_id", "uuid", None])


@st.composite
def _element(draw: st.DrawFn, key: str | None, ident: str) -> dict[str, Any]:
    body = draw(st.dictionaries(st.sampled_from(["text", "n", "by"]), _scalar, max_size=3))
    return {key: ident, **body} if key else {"ident": ident, **body}


@st.composite
def _pair(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two versions grown from one base: each side adds fields and array elements of its own."""
    key = draw(_key_style)
    shared = [draw(_element(key, f"s{i}")) for i in range(draw(st.integers(0, 3)))]
    base_fields = draw(st.dictionaries(st.sampled_from(["status", "score"]), _scalar, max_size=2))
    sides = []
    for side in ("c", "b"):
        own = [draw(_element(key, f"{side}{i}")) for i in range(draw(st.integers(0, 3)))]
        extra = draw(st.dictionaries(st.sampled_from(["x", "y"]), _scalar, max_size=2))
        nested = {"user": {f"{side}_field": draw(_scalar), "name": "Ana"}}
        items = draw(st.permutations(shared + own))
        sides.append({
            "_id": 1, **base_fields, **{f"{side}_{k}": v for k, v in extra.items()},
            **nested, "messages": items,
        })  # fmt: skip
    return sides[0], sides[1]


def _leaves(value: Any, path: str = "") -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_leaves(v, f"{path}.{k}") for k, v in value.items()), set())
    if isinstance(value, list):
        return set().union(*(_leaves(v, f"{path}[]") for v in value), set())
    return {f"{path}={value!r}"}


@settings(max_examples=300, deadline=None)
@given(_pair(), st.sampled_from([{}, {"messages": "message_id"}, {"messages": "uuid"}]))
def test_every_leaf_of_either_side_is_in_the_merge(
    pair: tuple[dict[str, Any], dict[str, Any]], merge_keys: dict[str, str]
) -> None:
    current, backup = pair
    merged = merge_documents(current, backup, timestamp_field=None, merge_keys=merge_keys)
    assert _leaves(current) <= _leaves(merged)
    assert _leaves(backup) <= _leaves(merged)
