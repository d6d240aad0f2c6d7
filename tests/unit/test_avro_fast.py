"""Compiled Avro readers (schemas.avro_fast) read exactly what fastavro reads, and refuse what it cannot; the C
reader (schemas/_avroc.c) reads exactly what the Python reader reads, also from mangled bytes."""

from __future__ import annotations

import functools
import io
import os
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_fast import NATIVE, Reader, compile_reader
from schemas.codec import _raw_readers, _registry, _without_uuid_types, decode_raw, encode
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


@functools.cache
def _python_readers() -> dict[bytes, Reader | None]:
    """The generated Python reader (the reference) of each current schema, whether or not the C one is built."""
    return {fp: compile_reader(_without_uuid_types(entry.raw), native=False) for fp, entry in _registry()[0].values()}


def _python(payload: bytes) -> Any:
    reader = _python_readers()[payload[2:10]]
    assert reader is not None
    values, end = reader(payload, 10)
    assert end == len(payload)
    return _raw_readers()[payload[2:10]][0], values


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
        assert _python(payload) == _fastavro(payload)
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


@pytest.mark.parametrize("native", [True, False])
def test_arrays_in_blocks_with_byte_sizes_and_multibyte_varints(native: bool) -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "s", "type": ["null", "string"]},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "d", "type": "double"},
    ]}  # fmt: skip
    reader = compile_reader(schema, native=native)
    assert reader is not None
    assert isinstance(reader, functools.partial) == (native and NATIVE)
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


_REFUSED = (ValueError, TypeError, EOFError, IndexError, OverflowError, struct.error)
"""What ``decode_raw`` takes for "not this lane" (UnicodeDecodeError is a ValueError)."""


def _outcome(reader: Reader, payload: bytes) -> tuple[str, Any]:
    try:
        return "read", reader(payload, 10)
    except _REFUSED as exc:
        return "refused", type(exc)


def _wider_than_64_bits(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_wider_than_64_bits(v) for v in value.values())
    if isinstance(value, list):
        return any(_wider_than_64_bits(v) for v in value)
    return type(value) is int and not -(2**63) <= value < 2**63


_SAMPLES = [
    encode(MemoryAdded(event_id=uuid.uuid4(), occurred_at=T0, key="c", cube_id="c", memory_id="m", user_id="u",
                       memory="the user likes tea", tags=["a", "b"], embedding=[0.5, -1.0],
                       sources=[SourceRef(content="x", message_index=3, role="user", type="chat")],
                       usage=[ModelUsage(model_id="e5", kind="embedding", prompt_tokens=4)], metadata={"k": 1})),
    encode(MemoryRevised(event_id=uuid.uuid4(), occurred_at=T0, key="c", cube_id="c", memory_id="m", memory="tea",
                         revision=2, tags=["x"], embedding=[1.0])),
    encode(MemoryRetired(event_id=uuid.uuid4(), occurred_at=T0, key="c", cube_id="c", memory_id="m",
                         reason="superseded", successor_ids=["n"], valid_to=T0)),
]  # fmt: skip


@pytest.mark.skipif(not NATIVE, reason="the C reader is not built here (no C compiler at install)")
@settings(max_examples=400, deadline=None)
@given(
    sample=st.sampled_from(_SAMPLES),
    edits=st.lists(st.tuples(st.integers(10, 400), st.sampled_from(["set", "insert", "delete"]),
                             st.binary(min_size=1, max_size=11)), max_size=4),
    cut=st.none() | st.integers(10, 400),
)  # fmt: skip
def test_the_c_reader_reads_mangled_bytes_as_the_python_reader_does(
    sample: bytes, edits: list[tuple[int, str, bytes]], cut: int | None
) -> None:
    """Bytes flipped, inserted (long varints among them), deleted or cut off: the C reader returns what the
    Python reader returns, or refuses where it refuses; it may also refuse a varint wider than 64 bits
    that the Python reader reads as a wider int (``decode_raw`` then leaves the payload to fastavro)."""
    payload = bytearray(sample)
    for at, kind, data in edits:
        at = min(at, len(payload))
        if kind == "set":
            payload[at:at + len(data)] = data
        elif kind == "insert":
            payload[at:at] = data
        else:
            del payload[at:at + len(data)]
    mangled = bytes(payload if cut is None else payload[:cut])
    native = _raw_readers()[sample[2:10]][2]
    python = _python_readers()[sample[2:10]]
    assert native is not None and python is not None
    ours, reference = _outcome(native, mangled), _outcome(python, mangled)
    if reference[0] == "refused":  # (not always with the same exception type: any of them means "not this lane")
        assert ours[0] == "refused"
    elif ours[0] == "refused":
        assert ours[1] is OverflowError and _wider_than_64_bits(reference[1][0])
    else:
        assert repr(ours) == repr(reference)  # repr: a NaN read from flipped bytes equals itself


@pytest.mark.skipif(not NATIVE, reason="the C reader is not built here (no C compiler at install)")
def test_the_c_reader_refuses_wide_varints_and_what_is_not_a_program() -> None:
    from schemas import _avroc

    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    reader = compile_reader(schema)
    assert reader is not None
    assert reader(b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", 0) == ({"n": 2**63 - 1}, 10)
    for wide in (b"\xff" * 9 + b"\x02", b"\xff" * 10 + b"\x01"):
        with pytest.raises((OverflowError, ValueError)):
            reader(wide, 0)
    lowest = b"\xff" * 9 + b"\x01"  # zigzag of -(2**63): an array block of that many items (negated: no int64)
    assert reader(lowest, 0) == ({"n": -(2**63)}, 10)
    items = compile_reader({"type": "record", "name": "A", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}}]})  # fmt: skip
    assert items is not None
    for count in (lowest, b"\xfe\xff\xff\xff\x0f"):  # that block; 2**31 - 1 items in a few bytes
        with pytest.raises(ValueError):
            items(count + b"\x00" * 4, 0)
    for bad in ((), (99,), (_avroc.RECORD, ("a",), ()), (_avroc.UNION, 5), "x"):
        with pytest.raises(TypeError):
            _avroc.read(bad, b"\x00", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _avroc.read((_avroc.LONG,), b"\x00", 2)


def test_the_c_reader_is_built_where_required() -> None:
    """CI sets MEMOS_REQUIRE_NATIVE=1: there the C reader must have been built by the install."""
    if os.environ.get("MEMOS_REQUIRE_NATIVE") != "1":
        pytest.skip("MEMOS_REQUIRE_NATIVE is not set (CI sets it)")
    assert NATIVE, "schemas._avroc was not built: is a C compiler installed? (pip install -e . builds it)"


@pytest.mark.skipif(not NATIVE, reason="the C reader is not built here (no C compiler at install)")
def test_the_built_c_reader_is_not_older_than_its_source() -> None:
    """An editable install does not rebuild the extension when schemas/_avroc.c changes: a stale build would
    test the old reader."""
    from pathlib import Path

    from schemas import _avroc

    source = Path(__file__).resolve().parents[2] / "schemas" / "_avroc.c"
    built = Path(_avroc.__file__)
    if not source.is_file() or built.parent != source.parent:
        pytest.skip("not an editable install of this checkout")
    assert built.stat().st_mtime >= source.stat().st_mtime, "schemas/_avroc.c changed: run pip install -e . again"
