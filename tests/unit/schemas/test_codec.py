"""Codec, golden payloads, Avro drift and event invariants."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.avro_gen import AVRO_DIR, avro_schema
from schemas.codec import HISTORY_DIR, UPCASTERS, decode, encode, fingerprint_of
from schemas.errors import EventDecodeError
from schemas.events import EVENT_TYPES, ConversationRecorded, MemoryAdded, SourceRef, derive_id
from schemas.topics import ALL_TOPICS, topic_for

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.avro")), ids=lambda p: p.name)
def test_golden_payload_decodes_to_recorded_fields(path: Path) -> None:
    event = decode(path.read_bytes())
    expected = json.loads(path.with_name(path.name.replace(".avro", ".json")).read_text())
    assert type(event).__name__ == path.name.split(".")[0]
    got = event.model_dump(mode="json")
    for field, value in expected.items():
        if field != "schema_version":
            assert got[field] == value, field


def test_every_event_type_has_a_golden_payload() -> None:
    names = {p.name.split(".")[0] for p in GOLDEN.glob("*.avro")}
    assert names == {cls.__name__ for cls in EVENT_TYPES}


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_checked_in_avro_schema_matches_model(cls: type) -> None:
    checked_in = json.loads((AVRO_DIR / f"{cls.__name__}.avsc").read_text())
    assert checked_in == avro_schema(cls), "run `python -m schemas.avro_gen` and add a history file"
    version = cls.model_fields["schema_version"].default
    history = json.loads((HISTORY_DIR / f"{cls.__name__}.v{version}.avsc").read_text())
    assert history == checked_in, "the current schema must be frozen in schemas/avro/history"


def test_round_trip_keeps_nested_json_and_sources() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = MemoryAdded(event_id=uuid.uuid4(), occurred_at=now, key="c", memory_id="m", cube_id="c", user_id="u",
                        memory="x", metadata={"a": [1, {"b": None}], "c": "文字"},
                        sources=[SourceRef(type="file", filename="r.pdf", status="unfetched", error="404")],
                        embedding=[0.5, 0.25], valid_from=now)
    assert decode(encode(event)) == event


def test_single_object_header_and_fingerprint() -> None:
    event = ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", user_id="u",
                                 cube_id="c", messages=[{"role": "user", "content": "hi"}], task_id="t")
    payload = encode(event)
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == fingerprint_of("ConversationRecorded")


@pytest.mark.parametrize("payload", [b"", b"garbage-bytes", b"\xc3\x01" + b"\x00" * 8 + b"x",
                                     b"\xc3\x01" + b"\xff" * 20])
def test_poison_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode(payload)


def test_truncated_payload_is_poison() -> None:
    golden = (GOLDEN / "MemoryAdded.v1.avro").read_bytes()
    with pytest.raises(EventDecodeError):
        decode(golden[: len(golden) // 2])


def test_old_schema_version_is_resolved_and_upcast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A v0 payload (written before `role` existed) decodes with the default, then the v0->v1 upcaster runs."""
    import io

    import fastavro

    from schemas import codec

    old = avro_schema(EVENT_TYPES[10])  # UserCreated
    assert old["name"] == "UserCreated"
    old["fields"] = [f for f in old["fields"] if f["name"] != "role"]
    (tmp_path / "UserCreated.v0.avsc").write_text(json.dumps(old))
    monkeypatch.setattr(codec, "HISTORY_DIR", tmp_path)
    codec._registry.cache_clear()
    try:
        body = io.BytesIO()
        record = {f["name"]: None for f in old["fields"]}
        record.update(event_id=str(uuid.UUID(int=1)), occurred_at=datetime(2024, 1, 1, tzinfo=UTC), key="u9",
                      schema_version=0, producer="old", event_type="UserCreated", user_id="u9", user_name="ann")
        fastavro.schemaless_writer(body, fastavro.parse_schema(old), record)
        payload = codec.MAGIC + codec._fp(old) + body.getvalue()

        def up(data: dict) -> dict:
            return {**data, "user_name": data["user_name"].title()}

        monkeypatch.setitem(UPCASTERS, ("UserCreated", 0), up)
        event = decode(payload)
        assert event.user_name == "Ann" and event.role == "user" and event.schema_version == 1
    finally:
        codec._registry.cache_clear()


def test_events_are_frozen_and_forbid_extra_fields() -> None:
    event = ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", user_id="u",
                                 cube_id="c", messages=[], task_id="t")
    with pytest.raises(ValidationError):
        event.user_id = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="bogus"):
        ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", user_id="u",
                             cube_id="c", messages=[], task_id="t", bogus=1)  # type: ignore[call-arg]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        ConversationRecorded(event_id=uuid.uuid4(), occurred_at=datetime(2025, 1, 1), key="c", user_id="u",
                             cube_id="c", messages=[], task_id="t")


def test_derived_ids_are_deterministic() -> None:
    parent = uuid.UUID(int=7)
    assert derive_id(parent, "fast:0") == derive_id(parent, "fast:0")
    assert derive_id(parent, "fast:0") != derive_id(parent, "fast:1")


def test_event_names_are_past_tense_and_topics_known() -> None:
    for cls in EVENT_TYPES:
        assert cls.__name__.endswith(("ed", "en")), cls.__name__
        assert topic_for(cls.__name__) in ALL_TOPICS


def test_embeddings_travel_as_float32_bytes() -> None:
    import numpy as np

    vector = np.random.default_rng(3).standard_normal(384).tolist()
    now = datetime(2025, 1, 2, tzinfo=UTC)
    fields = dict(event_id=uuid.uuid4(), occurred_at=now, key="c", memory_id="m", cube_id="c", user_id="u",
                  memory="x", embedding=vector)  # fmt: skip
    payload = encode(MemoryAdded(**fields))
    assert len(payload) < 384 * 4 + 200  # doubles would take 384 * 8 bytes
    got = decode(payload).embedding
    assert got == np.asarray(vector, dtype=np.float32).tolist()  # float32 precision, bit for bit
    assert max(abs(a - b) for a, b in zip(got, vector, strict=True)) < 1e-6
    import io

    import fastavro

    from schemas import codec

    fp, entry = codec._registry()[0]["MemoryAdded"]
    assert entry.to_avro is not None
    data = entry.to_avro(MemoryAdded(**fields).model_dump(mode="python"))
    data["embedding"] = b"\x00" * 6  # not a whole number of float32s
    body = io.BytesIO()
    fastavro.schemaless_writer(body, entry.parsed, data)
    with pytest.raises(EventDecodeError, match="float32 field of 6 bytes"):
        decode(codec.MAGIC + fp + body.getvalue())
