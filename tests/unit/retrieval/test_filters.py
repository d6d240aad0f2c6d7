"""MemOS filters: every operator, and/or nesting, field resolution and validation errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from processors.filters import compile_filter, matches, referenced_fields
from schemas.errors import ValidationFailed
from tests.unit.retrieval.records import T0, record

HOTEL = record(
    "m1",
    "User chose 7 Days Inn in Guangzhou",
    key="Hotel choice",
    tags=("travel", "hotel"),
    memory_type="UserMemory",
    session_id="s1",
    confidence=0.9,
    created_at=T0,
    metadata={"info": {"agent_id": "agent_1", "app_id": "app_9"}, "score": 7, "scene": "Payment"},
    sources=[{"type": "file", "file_id": "file_123", "filename": "report.md"}],
)
LOVE = record(
    "m2",
    "User said they love the assistant",
    key="Affection",
    tags=("feelings",),
    memory_type="LongTermMemory",
    session_id="s2",
    confidence=0.5,
    created_at=T0 + timedelta(days=30),
    metadata={"agent_id": "agent_2", "score": 3},
)


def ids(flt: dict[str, Any]) -> list[str]:
    compiled = compile_filter(flt)
    return [r.id for r in (HOTEL, LOVE) if matches(compiled, r)]


def test_no_filter_matches_everything() -> None:
    assert compile_filter(None) is None
    assert compile_filter({}) is None
    assert ids({}) == ["m1", "m2"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"memory_type": "UserMemory"}, ["m1"]),
        ({"memory_type": {"=": "LongTermMemory"}}, ["m2"]),
        ({"created_at": {"gt": "2025-03-01"}}, ["m1", "m2"]),
        ({"created_at": {"gt": "2025-03-01T12:00:00+00:00"}}, ["m2"]),
        ({"created_at": {"gte": "2025-03-01T12:00:00Z"}}, ["m1", "m2"]),
        ({"created_at": {"lt": "2025-03-15"}}, ["m1"]),
        ({"created_at": {"lte": "2025-03-01T12:00:00"}}, ["m1"]),
        ({"create_time": {"gte": "2025-03-10", "lt": "2025-04-10"}}, ["m2"]),
        ({"confidence": {"gt": 0.6}}, ["m1"]),
        ({"confidence": {"lte": 0.5}}, ["m2"]),
        ({"score": {"gte": 5}}, ["m1"]),
        ({"memory_type": {"in": ["UserMemory", "WorkingMemory"]}}, ["m1"]),
        ({"tags": {"in": ["feelings", "nothing"]}}, ["m2"]),
        ({"tags": {"contains": "hotel"}}, ["m1"]),
        ({"tags": {"contains": ["travel", "hotel"]}}, ["m1"]),
        ({"tags": {"contains": ["travel", "feelings"]}}, []),
        ({"tags": "travel"}, ["m1"]),
        ({"memory": {"contains": "love"}}, ["m2"]),
        ({"key": {"like": "%hotel%"}}, ["m1"]),
        ({"key": {"like": "hot%"}}, ["m1"]),
        ({"key": {"like": "affect"}}, ["m2"]),
        ({"key": {"like": "Affectio_"}}, ["m2"]),
        ({"key": {"like": "%ection"}}, ["m2"]),
        ({"tags": {"like": "feel%"}}, ["m2"]),
    ],
)
def test_operators(flt: dict[str, Any], expected: list[str]) -> None:
    assert ids(flt) == expected


def test_metadata_and_info_fields() -> None:
    assert ids({"agent_id": "agent_1"}) == ["m1"]  # found under metadata["info"]
    assert ids({"agent_id": "agent_2"}) == ["m2"]  # found flat in metadata
    assert ids({"info.app_id": "app_9"}) == ["m1"]
    assert ids({"metadata.info.agent_id": "agent_1"}) == ["m1"]
    assert ids({"scene": "Payment"}) == ["m1"]
    assert ids({"file_ids": {"contains": "file_123"}}) == ["m1"]
    assert ids({"sources": "file"}) == ["m1"]
    assert ids({"no_such_field": "x"}) == []
    assert ids({"no_such_field": {"in": ["x"]}}) == []


def test_and_or_nesting() -> None:
    both = {"and": [{"tags": {"contains": "travel"}}, {"created_at": {"lt": "2025-03-02"}}]}
    assert ids(both) == ["m1"]
    either = {"or": [{"agent_id": "agent_2"}, {"key": {"like": "%hotel%"}}]}
    assert ids(either) == ["m1", "m2"]
    nested = {
        "and": [{"or": [{"agent_id": "agent_1"}, {"agent_id": "agent_2"}]}, {"confidence": {"lt": 0.7}}]
    }
    assert ids(nested) == ["m2"]
    assert ids({"or": []}) == []
    assert ids({"and": []}) == ["m1", "m2"]
    # several fields in one condition dict are ANDed
    assert ids({"memory_type": "UserMemory", "session_id": "s2"}) == []


@pytest.mark.parametrize(
    ("flt", "field"),
    [
        ({"and": {"tags": "x"}}, "filter.and"),
        ({"or": ["tags"]}, "filter.or[0]"),
        ({"and": [{"tags": "x"}, {"created_at": {"gt": "yesterday"}}]}, "filter.and[1].created_at"),
        ({"created_at": {"between": ["2025-01-01", "2025-02-01"]}}, "filter.created_at"),
        ({"memory_type": {"in": "UserMemory"}}, "filter.memory_type"),
        ({"key": {"like": 5}}, "filter.key"),
        ({"confidence": {"gt": [1]}}, "filter.confidence"),
        ({"tags": {}}, "filter.tags"),
        ({"or": [{"and": [{"updated_at": {"lte": 17}}]}]}, "filter.or[0].and[0].updated_at"),
    ],
)
def test_bad_filters_name_the_field(flt: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        compile_filter(flt)
    assert info.value.field == field


def test_filter_must_be_an_object() -> None:
    with pytest.raises(ValidationFailed) as info:
        compile_filter(["tags"])  # type: ignore[arg-type]
    assert info.value.field == "filter"


def test_unparsable_stored_time_never_matches() -> None:
    odd = record("m3", metadata={"seen_at": "not a time"})
    assert not matches(compile_filter({"seen_at": {"gt": "2020-01-01"}}), odd)
    good = record("m4", metadata={"seen_at": "2024-05-01"})
    assert matches(compile_filter({"seen_at": {"gt": "2020-01-01"}}), good)


def test_value_types_and_list_equality() -> None:
    r = record(
        "m5",
        tags=("a", "b"),
        metadata={
            "level": "7",
            "flag": True,
            "count": 3,
            "names": ["x", "y"],
            "seen_at": "2025-01-02T00:00:00Z",
        },
    )

    def ok(flt: dict[str, Any]) -> bool:
        return matches(compile_filter(flt), r)

    assert ok({"tags": {"=": ["a", "b"]}}) and not ok({"tags": {"=": ["b", "a"]}})
    assert ok({"level": {"gt": 5}})  # a numeric string compares as a number
    assert not ok({"level": {"gt": "8"}})  # string with string: lexicographic
    assert ok({"flag": True}) and not ok({"flag": 1}) and not ok({"count": True})
    assert not ok({"flag": {"gt": 0}})
    assert ok({"names": {"like": "x%"}}) and ok({"names": {"in": ["y", "z"]}})
    assert ok({"names": {"gte": "y"}})  # any element
    assert ok({"seen_at": "2025-01-02"}) and ok({"seen_at": {"in": ["2025-01-02", "2026-01-01"]}})
    assert not ok({"count": {"contains": 3}})  # contains needs a list or a string
    assert not ok({"metadata.nothing.here": 1})


def test_referenced_fields() -> None:
    flt = compile_filter(
        {"and": [{"tags": "x"}, {"or": [{"create_time": {"gt": "2025-01-01"}}, {"agent_id": "a"}]}]}
    )
    assert referenced_fields(flt) == ("tags", "created_at", "agent_id")
    assert referenced_fields(None) == ()
