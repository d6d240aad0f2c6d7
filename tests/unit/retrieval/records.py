"""Factories of memory records for the retrieval unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.events import SourceRef
from schemas.memory import MemoryRecord, RelationRecord

__all__ = ["T0", "edge", "record"]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(memory_id: str, text: str = "", **fields: Any) -> MemoryRecord:
    """A record with sensible defaults; any MemoryRecord field can be overridden."""
    data: dict[str, Any] = {
        "id": memory_id,
        "cube_id": "cube-a",
        "user_id": "u1",
        "memory": text or f"memory {memory_id}",
        "created_at": T0,
        "updated_at": T0,
    }
    data.update(fields)
    if "sources" in data:
        data["sources"] = tuple(s if isinstance(s, SourceRef) else SourceRef(**s) for s in data["sources"])
    return MemoryRecord(**data)


def edge(source: str, target: str, relation: str = "FOLLOWS", weight: float = 1.0) -> RelationRecord:
    """An edge of cube-a."""
    return RelationRecord(
        id=f"{source}->{target}",
        cube_id="cube-a",
        source_id=source,
        target_id=target,
        relation=relation,  # type: ignore[arg-type]
        weight=weight,
        created_at=T0,
    )
