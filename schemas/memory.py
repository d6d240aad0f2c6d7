"""Read models of the projections: a memory and an edge as the stores hold and return them."""

from __future__ import annotations

import logging
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import JsonDict, MemoryType, RelationType, SourceRef

__all__ = [
    "MAX_SOURCES",
    "MemoryRecord",
    "MemoryStatus",
    "RelationRecord",
    "ScoredMemory",
    "capped_sources",
    "source_value",
]

logger = logging.getLogger(__name__)

MemoryStatus = Literal["activated", "retired"]

MAX_SOURCES = 32
"""Sources one memory keeps: its first (where it came from) and the latest ones. A fact said again and again
is revised each time with one more source; unbounded, every revision would rewrite all of them (a memory
merged 4,000 times made each revision cost tens of milliseconds). The log keeps every source."""

_T = TypeVar("_T")


def capped_sources(sources: list[_T]) -> list[_T]:
    """``sources`` cut to ``MAX_SOURCES``: the first and the latest ``MAX_SOURCES - 1``, in order."""
    if len(sources) <= MAX_SOURCES:
        return sources
    return [sources[0], *sources[len(sources) - MAX_SOURCES + 1 :]]


_PLAIN = (str, int, float, bool, type(None))


def source_value(source: SourceRef) -> dict[str, Any]:
    """A source as stores keep and compare it: ``model_dump(mode="json")``, or its field values as they are
    when all are plain JSON values (the same dict, without pydantic's serializer)."""
    values = source.__dict__
    if len(values) == len(SourceRef.model_fields) and all(isinstance(v, _PLAIN) for v in values.values()):
        return dict(values)
    return source.model_dump(mode="json")


class MemoryRecord(BaseModel):
    """One memory as projected: current text, provenance, history markers and embedding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    cube_id: str
    user_id: str
    session_id: str = "default_session"
    memory: str
    memory_type: MemoryType = "LongTermMemory"
    key: str = ""
    tags: tuple[str, ...] = ()
    background: str = ""
    sources: tuple[SourceRef, ...] = ()
    metadata: JsonDict = Field(default_factory=dict)
    embedding: tuple[float, ...] = ()
    embedding_model: str = ""
    extractor: str = "fast"
    status: MemoryStatus = "activated"
    retire_reason: str | None = None
    successor_ids: tuple[str, ...] = ()
    revision: int = 0
    confidence: float = 1.0
    origin_event_id: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None


class RelationRecord(BaseModel):
    """One edge between memories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    cube_id: str
    source_id: str
    target_id: str
    relation: RelationType
    weight: float = 1.0
    metadata: JsonDict = Field(default_factory=dict)
    created_at: AwareDatetime


class ScoredMemory(BaseModel):
    """A memory id with a score from one retriever (vector, keyword, graph) or from fusion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_id: str
    cube_id: str
    score: float
    retriever: str = ""
