"""The pure projector: a memory-topic event in, the store operations that project it out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from schemas.codec import float32_tuple
from schemas.events import (
    AnyEvent,
    CubeForgotten,
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
)
from schemas.memory import MemoryRecord, RelationRecord
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["memory_record", "project"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RECORD = MemoryRecord(id="-", cube_id="-", user_id="-", session_id="-", memory="", memory_type="LongTermMemory",
                       key="", tags=(), background="", sources=(), metadata={}, embedding=(), embedding_model="",
                       extractor="fast", status="activated", revision=0, confidence=1.0, origin_event_id=None,
                       created_at=_EPOCH, updated_at=_EPOCH, valid_from=None, retire_reason=None,
                       successor_ids=(), valid_to=None)  # fmt: skip
"""Every field set: ``model_copy(update=<every field>)`` of it is a record built without revalidation (the
same instance ``model_construct`` makes, in a quarter of its time)."""


def memory_record(event: MemoryAdded) -> MemoryRecord:
    """The record a MemoryAdded event projects to: activated, created and updated at ``occurred_at``.

    ``origin_event_id`` is the event the memory was derived from, or the MemoryAdded event itself
    when it names none, so every memory traces back to a log record.
    """
    origin = event.origin_event_id if event.origin_event_id is not None else event.event_id
    # Built without validation: every field comes from the validated event with the record's own type
    # (the same type checks would pass), and a replay spends a third of its time on this otherwise.
    return _RECORD.model_copy(update=dict(
        id=event.memory_id,
        cube_id=event.cube_id,
        user_id=event.user_id,
        session_id=event.session_id,
        memory=event.memory,
        memory_type=event.memory_type,
        key=event.title,
        tags=tuple(event.tags),
        background=event.background,
        sources=tuple(event.sources),
        metadata=dict(event.metadata),
        embedding=float32_tuple(event.embedding),
        embedding_model=event.embedding_model,
        extractor=event.extractor,
        status="activated",
        revision=0,
        confidence=event.confidence,
        origin_event_id=str(origin),
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        valid_from=event.valid_from,
        retire_reason=None,
        successor_ids=(),
        valid_to=None,
    ))


def project(event: AnyEvent | Event) -> list[AnyOp]:
    """Ops that project ``event`` into the graph, vector and keyword stores; [] for other events.

    Pure: times come from ``event.occurred_at`` and ids from the event, so a replay yields the same ops.
    """
    match event:
        case MemoryAdded():
            return [UpsertMemory(memory=memory_record(event))]
        case MemoryRevised():
            return [
                ReviseMemory.model_construct(  # fields of the validated event, with the op's types
                    op="ReviseMemory",
                    memory_id=event.memory_id,
                    cube_id=event.cube_id,
                    memory=event.memory,
                    tags=tuple(event.tags),
                    metadata=dict(event.metadata),
                    sources=tuple(event.sources),
                    embedding=float32_tuple(event.embedding),
                    embedding_model=event.embedding_model,
                    revision=event.revision,
                    updated_at=event.occurred_at,
                )
            ]
        case MemoryRetired():
            return [
                RetireMemory(
                    memory_id=event.memory_id,
                    cube_id=event.cube_id,
                    reason=event.reason,
                    successor_ids=tuple(event.successor_ids),
                    valid_to=event.valid_to if event.valid_to is not None else event.occurred_at,
                    updated_at=event.occurred_at,
                )
            ]
        case RelationAdded():
            return [
                UpsertRelation(
                    relation=RelationRecord(
                        id=event.relation_id,
                        cube_id=event.cube_id,
                        source_id=event.source_id,
                        target_id=event.target_id,
                        relation=event.relation,
                        weight=event.weight,
                        metadata=dict(event.metadata),
                        created_at=event.occurred_at,
                    )
                )
            ]
        case CubeForgotten():
            return [DropCube(cube_id=event.cube_id)]
        case _:
            return []
