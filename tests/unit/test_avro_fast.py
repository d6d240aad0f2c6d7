"""Compiled Avro readers (schemas.avro_fast) read exactly what fastavro reads, and refuse what it cannot."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
from fastavro.schema import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_fast import compile_reader
from schemas.codec import _raw_readers, decode_raw, encode
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised, ModelUsage, SourceRef

T0 = datetime(2024, 3, 1, tzinfo=UTC)
TEXT = st.text(max_size=300)
BIG = st.integers(-(2**63), 2**63 - 1)


def _fastavro(payload: bytes) -> Any:
    name, parsed, _ = _raw_readers()[payload[2:10]]
    stream = io.BytesIO(payload)
    stream.seek(10)
    return name, fastavro.schemaless_reader(stream, parsed, None)


def _compiled(payload: bytes) -> Any:
    name, _, reader = _raw_readers()[payload[2:10]]
    assert reader is not None
    values, end = reader(payload, 10)
    assert end == len(payload)
    return name, values


SOURCES = st.lists(
    st.builds(SourceRef, content=TEXT, message_index=BIG, role=TEXT, chat_time=st.none() | TEXT,
              url=st.none() | TEXT, type=st.sampled_from(["chat", "file", "doc"])),  # fmt: skip
    max_size=3,
)
USAGE = st.lists(
    st.builds(ModelUsage, model_id=TEXT, kind=st.sampled_from(["llm", "embedding"]), prompt_tokens=BIG,
              latency_ms=st.floats(allow_nan=False)),  # fmt: skip
    max_size=2,
)
VECTOR = st.lists(st.floats(width=32, allow_nan=False), max_size=40)
WHEN = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@settings(max_examples=150, deadline=None)
@given(
    memory=TEXT, tags=st.lists(TEXT, max_size=70), sources=SOURCES, usage=USAGE, vector=VECTOR, when=WHEN,
    valid_from=st.none() | WHEN, confidence=st.floats(allow_nan=False), revision=BIG,
    successors=st.lists(TEXT, max_size=5), origin=st.none() | st.uuids(),
)  # fmt: skip
def test_compiled_readers_equal_fastavro_on_memory_events(
    memory: str, tags: list[str], sources: list[SourceRef], usage: list[ModelUsage], vector: list[float],
    when: datetime, valid_from: datetime | None, confidence: float, revision: int, successors: list[str],
    origin: uuid.UUID | None,
) -> None:  # fmt: skip
    base: dict[str, Any] = {"event_id": uuid.uuid4(), "occurred_at": when, "key": "c", "cube_id": "c",
                            "memory_id": memory or "m"}
    events = [
        MemoryAdded(**base, user_id="u", memory=memory, tags=tags, sources=sources, usage=usage, embedding=vector,
                    valid_from=valid_from, confidence=confidence, origin_event_id=origin, metadata={"k": memory}),
        MemoryRevised(**base, memory=memory, revision=revision, tags=tags, sources=sources, usage=usage,
                      embedding=vector, origin_event_id=origin),
        MemoryRetired(**base, reason="superseded", successor_ids=successors, valid_to=valid_from),
    ]  # fmt: skip
    for event in events:
        payload = encode(event)
        assert _compiled(payload) == _fastavro(payload)
        assert decode_raw(payload) == _fastavro(payload)


def test_every_event_schema_compiles_or_is_left_to_fastavro() -> None:
    readers = _raw_readers()
    compiled = {name for name, _, reader in readers.values() if reader is not None}
    assert {"MemoryAdded", "MemoryRevised", "MemoryRetired"} <= compiled


def test_truncated_or_padded_bodies_are_refused() -> None:
    payload = encode(MemoryRetired(event_id=uuid.uuid4(), occurred_at=T0, key="c", cube_id="c", memory_id="m",
                                   reason="deleted"))  # fmt: skip
    for cut in range(10, len(payload)):
        assert decode_raw(payload[:cut]) is None
    assert decode_raw(payload + b"\x00") is None


def test_arrays_in_blocks_with_byte_sizes_and_multibyte_varints() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "s", "type": ["null", "string"]},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "d", "type": "double"},
    ]}  # fmt: skip
    reader = compile_reader(schema)
    assert reader is not None
    # xs: a block of -2 items (2 items, 2 bytes), then a block of 1 item, then the end
    body = bytes([3, 2, 2, 4]) + bytes([2, 0xAC, 0x02]) + b"\x00" + b"\x02\x04ab" + b"\x00" + b"\x00" * 8
    value, end = reader(body, 0)
    assert end == len(body)
    assert value == {"xs": [1, 2, 150], "s": "ab", "t": datetime(1970, 1, 1, tzinfo=UTC), "d": 0.0}
    ours = {"xs": [-(2**63), 2**63 - 1, 0], "s": None, "t": T0 + timedelta(microseconds=7), "d": -1.5}
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, parse_schema(schema), ours)
    assert reader(stream.getvalue(), 0) == (ours, len(stream.getvalue()))


def test_schemas_with_other_types_are_left_to_fastavro() -> None:
    assert compile_reader({"type": "record", "name": "E", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "K", "symbols": ["A"]}}]}) is None  # fmt: skip
    assert compile_reader({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]}) is None  # fmt: skip
