"""The projector's fast lane for replays: Avro values of a memory event straight to ops, no event model built.

``project_raw(name, values)`` returns exactly the ops ``project(decode(payload))`` returns for a
payload ``schemas.codec.decode_raw`` read, without validating an event model on the way (a replay spent
two thirds of its time decoding and projecting). What the Avro schema does not enforce, and the
event models do (literal values, uuid strings, JSON objects), is checked here; whenever a check fails,
or for any other event type, it returns None and the caller takes the reference path, which raises
the same EventDecodeError it always did.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from schemas.codec import Float32List, Float32Vector, float32_tuple
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised, ModelUsage, SourceRef
from schemas.memory import MemoryRecord
from schemas.ops import AnyOp, RetireMemory, ReviseMemory, UpsertMemory, as_is

__all__ = ["project_raw"]

logger = logging.getLogger(__name__)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The form ``str(uuid.UUID(...))`` gives (and the encoder writes); any other spelling takes the slow path."""


def _literals(model: type[BaseModel]) -> dict[str, frozenset[str]]:
    """Fields of ``model`` typed as a Literal, with their allowed values."""
    return {
        name: frozenset(get_args(field.annotation))
        for name, field in model.model_fields.items()
        if get_origin(field.annotation) is Literal
    }


_ADDED = _literals(MemoryAdded)
_REVISED = _literals(MemoryRevised)
_RETIRED = _literals(MemoryRetired)
_SOURCE = _literals(SourceRef)
_USAGE = _literals(ModelUsage)
_SOURCE_FIELDS = frozenset(SourceRef.model_fields)
_RECORD_SET = frozenset(MemoryRecord.model_fields)


def _allowed(values: dict[str, Any], literals: dict[str, frozenset[str]]) -> bool:
    for name, allowed in literals.items():
        if values.get(name) not in allowed:
            return False
    return True


def _sources(raw: list[dict[str, Any]]) -> tuple[SourceRef, ...] | None:
    if not raw:
        return ()
    out = []
    for source in raw:
        if source.keys() != _SOURCE_FIELDS or not _allowed(source, _SOURCE):
            return None
        out.append(as_is(SourceRef, source, set(_SOURCE_FIELDS)))
    return tuple(out)


def _usage_ok(raw: list[dict[str, Any]]) -> bool:
    return all(_allowed(usage, _USAGE) for usage in raw)


def _metadata(text: str) -> dict[str, Any] | None:
    if text == "{}":
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if type(value) is dict else None


def _vector(blob: bytes, lazy: bool) -> tuple[float, ...] | None:
    if not blob:
        return ()
    if len(blob) % 4:
        return None
    vector = Float32Vector(bytes(blob))
    return vector if lazy else float32_tuple(_materialized(vector))  # type: ignore[return-value]


def _materialized(vector: Float32Vector) -> Float32List:
    return Float32List(list(vector), vector.blob)


def _common_ok(v: dict[str, Any], literals: dict[str, frozenset[str]]) -> bool:
    return (
        _allowed(v, literals)
        and type(v["event_id"]) is str
        and _UUID.fullmatch(v["event_id"]) is not None
        and isinstance(v["occurred_at"], datetime)
        and v["occurred_at"].tzinfo is not None
    )


def _added(v: dict[str, Any], lazy: bool) -> list[AnyOp] | None:
    if not _common_ok(v, _ADDED) or (v["usage"] and not _usage_ok(v["usage"])):
        return None
    origin = v["origin_event_id"]
    if origin is not None and _UUID.fullmatch(origin) is None:
        return None
    sources = _sources(v["sources"])
    metadata = _metadata(v["metadata"])
    embedding = _vector(v["embedding"], lazy)
    if sources is None or metadata is None or embedding is None:
        return None
    at = v["occurred_at"]
    record = as_is(MemoryRecord, {  # every field, in the model's order
        "id": v["memory_id"], "cube_id": v["cube_id"], "user_id": v["user_id"], "session_id": v["session_id"],
        "memory": v["memory"], "memory_type": v["memory_type"], "key": v["title"], "tags": tuple(v["tags"]),
        "background": v["background"], "sources": sources, "metadata": metadata, "embedding": embedding,
        "embedding_model": v["embedding_model"], "extractor": v["extractor"], "status": "activated",
        "retire_reason": None, "successor_ids": (), "revision": 0, "confidence": float(v["confidence"]),
        "origin_event_id": origin if origin is not None else v["event_id"], "created_at": at, "updated_at": at,
        "valid_from": v["valid_from"], "valid_to": None,
    }, set(_RECORD_SET))  # fmt: skip
    return [as_is(UpsertMemory, {"op": "UpsertMemory", "memory": record}, {"memory"})]


_REVISE_FIELDS = ("op", "memory_id", "cube_id", "memory", "tags", "metadata", "sources", "embedding",
                  "embedding_model", "revision", "updated_at")  # fmt: skip


def _revised(v: dict[str, Any], lazy: bool) -> list[AnyOp] | None:
    if not _common_ok(v, _REVISED) or (v["usage"] and not _usage_ok(v["usage"])):
        return None
    origin = v["origin_event_id"]
    if origin is not None and _UUID.fullmatch(origin) is None:
        return None
    sources = _sources(v["sources"])
    metadata = _metadata(v["metadata"])
    embedding = _vector(v["embedding"], lazy)
    if sources is None or metadata is None or embedding is None:
        return None
    values = dict(zip(_REVISE_FIELDS, (
        "ReviseMemory", v["memory_id"], v["cube_id"], v["memory"], tuple(v["tags"]), metadata, sources,
        embedding, v["embedding_model"], v["revision"], v["occurred_at"],
    ), strict=True))  # fmt: skip
    return [as_is(ReviseMemory, values, set(_REVISE_FIELDS))]


_RETIRE_FIELDS = ("op", "memory_id", "cube_id", "reason", "successor_ids", "valid_to", "updated_at")


def _retired(v: dict[str, Any], lazy: bool) -> list[AnyOp] | None:
    if not _common_ok(v, _RETIRED):
        return None
    valid_to = v["valid_to"]
    values = dict(zip(_RETIRE_FIELDS, (
        "RetireMemory", v["memory_id"], v["cube_id"], v["reason"], tuple(v["successor_ids"]),
        valid_to if valid_to is not None else v["occurred_at"], v["occurred_at"],
    ), strict=True))  # fmt: skip
    return [as_is(RetireMemory, values, set(_RETIRE_FIELDS[1:]))]


_LANES = {"MemoryAdded": _added, "MemoryRevised": _revised, "MemoryRetired": _retired}


def project_raw(name: str, values: dict[str, Any], *, lazy_vectors: bool = False) -> list[AnyOp] | None:
    """``project(decode(payload))`` from ``decode_raw(payload)``'s (name, values), or None: take that path.

    With ``lazy_vectors`` embeddings are ``Float32Vector`` (bytes, floats made only when read), for
    stores that use the float32 bytes alone (the embedded ones); otherwise tuples of floats.
    """
    lane = _LANES.get(name)
    if lane is None:
        return None
    try:
        return lane(values, lazy_vectors)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
