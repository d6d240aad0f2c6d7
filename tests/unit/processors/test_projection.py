"""The pure projector: golden events in, ops out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from processors.projection import memory_record, project
from schemas.events import (
    ConversationRecorded,
    CubeCreated,
    CubeForgotten,
    DerivationFailed,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
    SourceRef,
    TaskSubmitted,
    derive_id,
)
from schemas.memory import MemoryRecord, RelationRecord
from schemas.ops import DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
ORIGIN = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def _added(**overrides: object) -> MemoryAdded:
    fields: dict[str, object] = {
        "event_id": EVENT_ID,
        "occurred_at": AT,
        "key": "cube-1",
        "memory_id": "m-1",
        "cube_id": "cube-1",
        "user_id": "alice",
        "session_id": "s-1",
        "memory": "Alice likes green tea.",
        "memory_type": "UserMemory",
        "title": "tea preference",
        "tags": ["tea", "preference"],
        "background": "talking about drinks",
        "sources": [SourceRef(role="user", message_index=2, content="I like green tea")],
        "metadata": {"info": {"agent": "a1"}},
        "embedding": [0.25, -0.5, 1.0],
        "embedding_model": "test/e",
        "extractor": "rules",
        "origin_event_id": ORIGIN,
        "valid_from": AT - timedelta(days=1),
        "confidence": 0.75,
    }
    fields.update(overrides)
    return MemoryAdded(**fields)  # type: ignore[arg-type]


def test_memory_added_projects_to_one_upsert_with_the_full_record() -> None:
    ops = project(_added())
    assert ops == [
        UpsertMemory(
            memory=MemoryRecord(
                id="m-1",
                cube_id="cube-1",
                user_id="alice",
                session_id="s-1",
                memory="Alice likes green tea.",
                memory_type="UserMemory",
                key="tea preference",
                tags=("tea", "preference"),
                background="talking about drinks",
                sources=(SourceRef(role="user", message_index=2, content="I like green tea"),),
                metadata={"info": {"agent": "a1"}},
                embedding=(0.25, -0.5, 1.0),
                embedding_model="test/e",
                extractor="rules",
                status="activated",
                revision=0,
                confidence=0.75,
                origin_event_id=str(ORIGIN),
                created_at=AT,
                updated_at=AT,
                valid_from=AT - timedelta(days=1),
            )
        )
    ]


def test_memory_without_origin_traces_to_its_own_event() -> None:
    record = memory_record(_added(origin_event_id=None))
    assert record.origin_event_id == str(EVENT_ID)
    assert record.created_at == record.updated_at == AT


def test_projection_is_deterministic() -> None:
    event = _added()
    assert project(event) == project(event)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"origin_event_id": None, "valid_from": None, "tags": [], "sources": [], "metadata": {}, "embedding": []}],
)
def test_records_built_without_validation_equal_validated_ones(overrides: dict[str, object]) -> None:
    """memory_record and the revise op skip validation (speed); they must be what validation would build."""
    record = memory_record(_added(**overrides))
    again = MemoryRecord.model_validate(record.model_dump())
    assert record == again
    assert {k: type(v) for k, v in dict(record).items()} == {k: type(v) for k, v in dict(again).items()}
    assert record.model_dump_json() == again.model_dump_json()
    revise = project(MemoryRevised(event_id=EVENT_ID, occurred_at=AT, key="c", memory_id="m", cube_id="c",
                                   revision=1, memory="x", embedding=[0.5], metadata={"a": [1]}))  # fmt: skip
    assert revise == [ReviseMemory.model_validate(revise[0].model_dump())]
    assert dict(revise[0]) == dict(ReviseMemory.model_validate(revise[0].model_dump()))


def test_memory_revised_projects_to_revise() -> None:
    event = MemoryRevised(
        event_id=derive_id(EVENT_ID, "rev"),
        occurred_at=AT + timedelta(hours=1),
        key="cube-1",
        memory_id="m-1",
        cube_id="cube-1",
        revision=2,
        memory="Alice loves green tea.",
        tags=["tea"],
        metadata={"merged": True},
        sources=[SourceRef(content="love it")],
        embedding=[1.0, 0.0, 0.0],
        embedding_model="test/e",
    )
    assert project(event) == [
        ReviseMemory(
            memory_id="m-1",
            cube_id="cube-1",
            memory="Alice loves green tea.",
            tags=("tea",),
            metadata={"merged": True},
            sources=(SourceRef(content="love it"),),
            embedding=(1.0, 0.0, 0.0),
            embedding_model="test/e",
            revision=2,
            updated_at=AT + timedelta(hours=1),
        )
    ]


@pytest.mark.parametrize(
    ("valid_to", "expected"),
    [(None, AT + timedelta(hours=2)), (AT - timedelta(days=3), AT - timedelta(days=3))],
)
def test_memory_retired_projects_to_retire(valid_to: datetime | None, expected: datetime) -> None:
    event = MemoryRetired(
        event_id=derive_id(EVENT_ID, "ret"),
        occurred_at=AT + timedelta(hours=2),
        key="cube-1",
        memory_id="m-1",
        cube_id="cube-1",
        reason="refined",
        successor_ids=["m-2", "m-3"],
        valid_to=valid_to,
    )
    assert project(event) == [
        RetireMemory(
            memory_id="m-1",
            cube_id="cube-1",
            reason="refined",
            successor_ids=("m-2", "m-3"),
            valid_to=expected,
            updated_at=AT + timedelta(hours=2),
        )
    ]


def test_relation_added_projects_to_upsert_relation() -> None:
    event = RelationAdded(
        event_id=derive_id(EVENT_ID, "rel"),
        occurred_at=AT,
        key="cube-1",
        relation_id="r-1",
        cube_id="cube-1",
        source_id="m-2",
        target_id="m-1",
        relation="SUPERSEDES",
        weight=0.5,
        metadata={"why": "refined"},
    )
    assert project(event) == [
        UpsertRelation(
            relation=RelationRecord(
                id="r-1",
                cube_id="cube-1",
                source_id="m-2",
                target_id="m-1",
                relation="SUPERSEDES",
                weight=0.5,
                metadata={"why": "refined"},
                created_at=AT,
            )
        )
    ]


def test_cube_forgotten_drops_the_cube() -> None:
    event = CubeForgotten(
        event_id=EVENT_ID, occurred_at=AT, key="cube-1", cube_id="cube-1", requested_by="alice"
    )
    assert project(event) == [DropCube(cube_id="cube-1")]


@pytest.mark.parametrize(
    "event",
    [
        ConversationRecorded(
            event_id=EVENT_ID,
            occurred_at=AT,
            key="cube-1",
            user_id="alice",
            cube_id="cube-1",
            messages=[{"role": "user", "content": "hi"}],
            task_id="t-1",
        ),
        DerivationFailed(
            event_id=EVENT_ID,
            occurred_at=AT,
            key="cube-1",
            cube_id="cube-1",
            origin_event_id=ORIGIN,
            stage="llm",
            error="timeout",
        ),
        TaskSubmitted(
            event_id=EVENT_ID,
            occurred_at=AT,
            key="cube-1",
            task_id="t-1",
            user_id="alice",
            cube_id="cube-1",
            label="add",
        ),
        CubeCreated(event_id=EVENT_ID, occurred_at=AT, key="cube-1", cube_id="cube-1", owner_id="alice"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_events_project_to_nothing(event: object) -> None:
    assert project(event) == []  # type: ignore[arg-type]
