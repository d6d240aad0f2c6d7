"""Property maps of the graph model: MemoryRecord and RelationRecord to and from node and edge properties.

No Cypher here (that is ``cypher``); these maps are what both drivers send as parameters and read back.
Lists stay lists of primitives (both engines store those), complex values become canonical JSON
strings, times become epoch milliseconds plus an exact ``..._us`` twin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.errors import StoreError
from schemas.events import SourceRef
from schemas.memory import MemoryRecord, RelationRecord

__all__ = [
    "READ_PROPERTIES",
    "embedding_props",
    "from_us",
    "json_text",
    "memory_from_props",
    "memory_props",
    "relation_from_row",
    "required_time",
    "source_text",
    "time_props",
    "time_value",
    "to_us",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READ_PROPERTIES: tuple[str, ...] = (
    "id", "cube_id", "user_id", "session_id", "memory", "memory_type", "key", "tags", "background",
    "sources", "meta_keys", "meta_values", "embedding_json", "embedding_model", "extractor", "status",
    "retire_reason", "successor_ids", "revision", "confidence", "origin_event_id", "created_at_us",
    "updated_at_us", "valid_from_us", "valid_to_us",
)  # fmt: skip
"""Node properties a read returns: all but the float list ``embedding`` (``embedding_json`` is exact)."""


def to_us(value: datetime) -> int:
    """Exact epoch microseconds of an aware datetime."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    """UTC datetime from epoch microseconds."""
    return _EPOCH + timedelta(microseconds=int(value))


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def source_text(ref: SourceRef) -> str:
    return json_text(ref.model_dump(mode="json"))


def time_props(prefix: str, value: datetime | None) -> dict[str, int | None]:
    if value is None:
        return {prefix: None, f"{prefix}_us": None}
    us = to_us(value)
    return {prefix: us // 1000, f"{prefix}_us": us}


def embedding_props(values: Sequence[float], model: str, *, store: bool) -> dict[str, Any]:
    if not store or not values:
        return {"embedding": [], "embedding_json": "", "embedding_model": model}
    floats = [float(v) for v in values]
    return {"embedding": floats, "embedding_json": json_text(floats), "embedding_model": model}


def memory_props(record: MemoryRecord, namespace: str, *, store_embedding: bool = True) -> dict[str, Any]:
    """Every property of a ``:Memory`` node for this record (None removes a property)."""
    props: dict[str, Any] = {
        "namespace": namespace,
        "id": record.id,
        "cube_id": record.cube_id,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "memory": record.memory,
        "memory_type": record.memory_type,
        "key": record.key,
        "tags": list(record.tags),
        "background": record.background,
        "sources": [source_text(s) for s in record.sources],
        "meta_keys": list(record.metadata),
        "meta_values": [json_text(v) for v in record.metadata.values()],
        "extractor": record.extractor,
        "status": record.status,
        "retire_reason": record.retire_reason,
        "successor_ids": list(record.successor_ids),
        "revision": record.revision,
        "confidence": float(record.confidence),
        "origin_event_id": record.origin_event_id,
    }
    props.update(embedding_props(record.embedding, record.embedding_model, store=store_embedding))
    for name in ("created_at", "updated_at", "valid_from", "valid_to"):
        props.update(time_props(name, getattr(record, name)))
    return props


def time_value(props: Mapping[str, Any], name: str) -> datetime | None:
    us = props.get(f"{name}_us")
    if us is not None:
        return from_us(us)
    ms = props.get(name)
    return None if ms is None else from_us(int(ms) * 1000)


def required_time(props: Mapping[str, Any], name: str) -> datetime:
    value = time_value(props, name)
    if value is None:
        raise KeyError(name)
    return value


def memory_from_props(props: Mapping[str, Any]) -> MemoryRecord:
    """Rebuild a MemoryRecord from a node's property map. Raises StoreError on a malformed node."""
    try:
        exact = props.get("embedding_json") or ""
        embedding = json.loads(exact) if exact else list(props.get("embedding") or ())
        keys = list(props.get("meta_keys") or ())
        values = [json.loads(v) for v in props.get("meta_values") or ()]
        return MemoryRecord(
            id=props["id"],
            cube_id=props["cube_id"],
            user_id=props["user_id"],
            session_id=props.get("session_id") or "default_session",
            memory=props["memory"],
            memory_type=props.get("memory_type") or "LongTermMemory",
            key=props.get("key") or "",
            tags=tuple(props.get("tags") or ()),
            background=props.get("background") or "",
            sources=tuple(SourceRef.model_validate_json(s) for s in props.get("sources") or ()),
            metadata=dict(zip(keys, values, strict=True)),
            embedding=tuple(float(v) for v in embedding),
            embedding_model=props.get("embedding_model") or "",
            extractor=props.get("extractor") or "fast",
            status=props["status"],
            retire_reason=props.get("retire_reason"),
            successor_ids=tuple(props.get("successor_ids") or ()),
            revision=int(props.get("revision") or 0),
            confidence=float(props.get("confidence", 1.0)),
            origin_event_id=props.get("origin_event_id"),
            created_at=required_time(props, "created_at"),
            updated_at=required_time(props, "updated_at"),
            valid_from=time_value(props, "valid_from"),
            valid_to=time_value(props, "valid_to"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"malformed :Memory node {props.get('id')!r}: {exc}") from exc


def relation_from_row(row: Mapping[str, Any]) -> RelationRecord:
    """Rebuild a RelationRecord from a row with ``props``, ``type``, ``source_id``, ``target_id``."""
    props = row["props"]
    try:
        return RelationRecord(
            id=props["id"],
            cube_id=props["cube_id"],
            source_id=row["source_id"],
            target_id=row["target_id"],
            relation=row["type"],
            weight=float(props.get("weight", 1.0)),
            metadata=json.loads(props.get("metadata") or "{}"),
            created_at=required_time(props, "created_at"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"malformed edge {props.get('id')!r}: {exc}") from exc
