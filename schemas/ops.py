"""Projection operations and commands: values that processors return and stores apply; never I/O."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import JsonDict, RelationType, SourceRef
from schemas.memory import MemoryRecord, RelationRecord

__all__ = [
    "AnyOp",
    "as_is",
    "DropCube",
    "ReviseMemory",
    "RetireMemory",
    "UpsertMemory",
    "UpsertRelation",
    "WarmKVCache",
]

logger = logging.getLogger(__name__)

_Model = TypeVar("_Model", bound=BaseModel)
_set = object.__setattr__


def as_is(cls: type[_Model], values: dict[str, Any], fields_set: set[str] | None = None) -> _Model:
    """An instance of ``cls`` holding ``values`` as they are, unvalidated: what ``model_construct`` makes,
    without its overhead (no defaults filled in: a field left out raises AttributeError when read)."""
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values) if fields_set is None else fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UpsertMemory(_Op):
    """Insert a memory, or overwrite it with the same content (idempotent by id)."""

    op: Literal["UpsertMemory"] = "UpsertMemory"
    memory: MemoryRecord


class ReviseMemory(_Op):
    """Replace a memory's text, tags and embedding; merge metadata; append sources; bump revision."""

    op: Literal["ReviseMemory"] = "ReviseMemory"
    memory_id: str
    cube_id: str
    memory: str
    tags: tuple[str, ...] = ()
    metadata: JsonDict = Field(default_factory=dict)
    sources: tuple[SourceRef, ...] = ()
    embedding: tuple[float, ...] = ()
    embedding_model: str = ""
    revision: int
    updated_at: AwareDatetime


class RetireMemory(_Op):
    """Mark a memory retired (it still resolves by id), naming its successors."""

    op: Literal["RetireMemory"] = "RetireMemory"
    memory_id: str
    cube_id: str
    reason: str
    successor_ids: tuple[str, ...] = ()
    valid_to: AwareDatetime | None = None
    updated_at: AwareDatetime


class UpsertRelation(_Op):
    """Insert or overwrite an edge (idempotent by id)."""

    op: Literal["UpsertRelation"] = "UpsertRelation"
    relation: RelationRecord


class DropCube(_Op):
    """Remove every memory and edge of a cube (forget, or the start of a replay)."""

    op: Literal["DropCube"] = "DropCube"
    cube_id: str


AnyOp = Annotated[
    UpsertMemory | ReviseMemory | RetireMemory | UpsertRelation | DropCube, Field(discriminator="op")
]


class WarmKVCache(BaseModel):
    """Command to the KV warmer: build (or keep) a cache of these memories for a cube and model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cube_id: str
    model_id: str
    memory_ids: tuple[str, ...]
    texts: tuple[str, ...]
    reason: Literal["mem_update", "composition_changed", "query"] = "mem_update"
    relation_hint: RelationType | None = None
