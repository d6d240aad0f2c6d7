"""Decoded float32 fields keep their bytes: equal to the floats, used as they are by the encoder and the stores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from memory_store.embedded.graph import pack_embedding, unpack_embedding
from memory_store.embedded.vector_rows import as_float32
from processors.projection import project
from schemas.codec import Float32List, decode, encode, float32_blob, float32_tuple
from schemas.errors import EventDecodeError
from schemas.events import MemoryAdded, MemoryRevised
from schemas.ops import ReviseMemory, UpsertMemory


def _vec(seed: int, dim: int = 16) -> list[float]:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32).tolist()


def _added(embedding: list[float]) -> MemoryAdded:
    return MemoryAdded(event_id=uuid.uuid4(), occurred_at=datetime(2026, 1, 2, tzinfo=UTC), key="c",
                       memory_id="m1", cube_id="c", user_id="u", memory="text", embedding=embedding,
                       metadata={"a": [1, 2]})  # fmt: skip


def test_decoded_embedding_equals_the_floats_and_carries_their_bytes() -> None:
    original = _added(_vec(1))
    event = decode(encode(original))
    assert event == original
    assert isinstance(event.embedding, Float32List)
    assert event.embedding == original.embedding
    assert float32_blob(event.embedding) == np.asarray(original.embedding, dtype="<f4").tobytes()
    assert event.metadata == {"a": [1, 2]}
    assert encode(event)[10:] == encode(original)[10:]  # the encoder writes the carried bytes unchanged


def test_projected_record_keeps_the_bytes_and_stores_read_them_as_the_floats() -> None:
    event = decode(encode(_added(_vec(2))))
    (op,) = project(event)
    assert isinstance(op, UpsertMemory)
    embedding = op.memory.embedding
    assert embedding == tuple(event.embedding)
    assert float32_blob(embedding) is not None
    plain = tuple(embedding)  # a plain tuple takes the conversion path: the same bytes come out
    assert float32_blob(plain) is None
    assert pack_embedding(embedding) == pack_embedding(plain)
    assert unpack_embedding(pack_embedding(embedding)) == plain
    assert as_float32(embedding).tobytes() == as_float32(plain).tobytes()


def test_revision_op_keeps_the_bytes() -> None:
    revised = MemoryRevised(event_id=uuid.uuid4(), occurred_at=datetime(2026, 1, 2, tzinfo=UTC), key="c",
                            memory_id="m1", cube_id="c", memory="new", embedding=_vec(3))  # fmt: skip
    (op,) = project(decode(encode(revised)))
    assert isinstance(op, ReviseMemory)
    assert op.embedding == tuple(revised.embedding)
    assert float32_blob(op.embedding) == np.asarray(revised.embedding, dtype="<f4").tobytes()


def test_a_changed_list_is_not_taken_for_its_old_bytes() -> None:
    event = decode(encode(_added(_vec(4))))
    values = Float32List(list(event.embedding), float32_blob(event.embedding) or b"")
    values.append(1.0)  # length no longer matches the bytes
    assert float32_blob(values) is None
    assert float32_blob(float32_tuple([0.5, 0.25])) is None


def test_float32_field_of_odd_length_is_a_decode_error() -> None:
    good = encode(_added([0.5]))
    # the embedding is the only bytes field holding exactly 4 bytes after a 0x08 length prefix (zigzag 4)
    at = good.index(b"\x08" + np.asarray([0.5], dtype="<f4").tobytes())
    broken = good[:at] + b"\x06" + good[at + 1 : at + 4] + good[at + 5 :]
    with pytest.raises(EventDecodeError, match="float32"):
        decode(broken)
