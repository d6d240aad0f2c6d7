"""No duplicate memories: 200 concurrent async fine adds on the embedded runtime, live and after replay.

An async fine add runs twice: the fast phase (the "deriver" group) writes quick memories, the refine phase
(the "refiner" group) writes the fine ones and retires the quick ones they refine. The two groups race,
so a retirement can reach the log before the memory it retires; the projection must still end with the
quick memory retired (a tombstone), the same way live and on replay.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.codec import decode
from schemas.events import MemoryAdded, MemoryRetired
from schemas.memory import MemoryRecord
from schemas.topics import CONVERSATIONS, MEMORIES
from streams.log.base import TopicPartition
from streams.replay import replay_cube
from streams.settings import AppSettings

CUBE = "cube_dups"
ADDS = 200
WORDS = (
    "anchor banjo cactus dolphin ember falcon glacier harbor igloo jasmine kettle lantern meadow nectar "
    "orchid pepper quartz raven saddle tulip umbrella violin walnut yacht zebra almond bramble cobalt "
    "dune eclipse fjord gravel hazel ivory juniper kayak lagoon marble nutmeg oyster pebble quiver "
    "rhubarb saffron thistle urchin velvet willow yarrow zinnia basalt cinder driftwood elm fern geyser"
).split()


def _message(i: int) -> str:
    """A sentence of its own per add (words picked by i; few words shared), so dedup keeps the adds apart."""
    a, b, c = (WORDS[(i * 3 + j * 17) % len(WORDS)] for j in range(3))
    return f"I keep a {a}, a {b} and a {c} in room {i}."


async def _wait_for_everything(rt: Runtime) -> None:
    """Both derivation phases past every conversation record, then the projector past every memory record."""
    conversations: dict[TopicPartition, int] = {
        (CONVERSATIONS, p): end for p, end in (await rt.log.end_offsets(CONVERSATIONS)).items() if end
    }
    for group in ("deriver", "refiner"):
        await rt.wait_for(group, conversations, timeout_s=600)
    memories: dict[TopicPartition, int] = {
        (MEMORIES, p): end for p, end in (await rt.log.end_offsets(MEMORIES)).items() if end
    }
    await rt.wait_for("projector", memories, timeout_s=600)


async def _log_facts(rt: Runtime) -> tuple[set[str], set[str], int]:
    """(ids added, ids retired, retirements that reached the log before their memory)."""
    added: set[str] = set()
    retired: set[str] = set()
    early = 0
    for partition, end in (await rt.log.end_offsets(MEMORIES)).items():
        offset = 0
        while offset < end:
            records = await rt.log.read(MEMORIES, partition, offset, limit=1000)
            for record in records:
                event = decode(record.value)
                if isinstance(event, MemoryAdded) and event.cube_id == CUBE:
                    added.add(event.memory_id)
                elif isinstance(event, MemoryRetired) and event.cube_id == CUBE:
                    retired.add(event.memory_id)
                    early += event.memory_id not in added
            offset = records[-1].position.offset + 1
    return added, retired, early


def _check(memories: list[MemoryRecord], added: set[str], retired: set[str]) -> None:
    active = [m for m in memories if m.status == "activated"]
    assert {m.id for m in memories} == added
    assert not [m.id for m in active if m.id in retired], "a retired memory is active"
    assert {m.id for m in memories if m.status == "retired"} == retired & added
    texts = Counter(m.memory for m in active)
    assert [t for t, n in texts.items() if n > 1] == []


async def test_concurrent_async_fine_adds_leave_no_duplicates_live_or_after_replay(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("ann", [CUBE], [{"role": "user", "content": "I am setting up the guest list."}])
        results = await asyncio.gather(*(
            service.add("ann", [CUBE], [{"role": "user", "content": _message(i)}],
                        mode="fine", async_mode="async")
            for i in range(ADDS)
        ))  # fmt: skip
        assert len(results) == ADDS
        await _wait_for_everything(rt)
        added, retired, early = await _log_facts(rt)
        assert retired & added, "the refine phase retired no quick memory: the race was not exercised"
        live = await rt.graph.list_memories(CUBE, include_retired=True)
        _check(live, added, retired)
        live_vector = await rt.vector.search(CUBE, list(live[0].embedding), k=1000)
        live_keyword = await rt.keyword.search(CUBE, "note meadow lantern", k=1000)
        assert {h.memory_id for h in live_vector} == {m.id for m in live if m.status == "activated"}

        assert await replay_cube(rt.log, rt.stores, rt.projection_stage.lock, CUBE) > 0
        replayed = await rt.graph.list_memories(CUBE, include_retired=True)
        assert replayed == live
        _check(replayed, added, retired)
        # exactly the same hits and scores: a row's score does not depend on where replay lays it out
        assert await rt.vector.search(CUBE, list(live[0].embedding), k=1000) == live_vector
        assert await rt.keyword.search(CUBE, "note meadow lantern", k=1000) == live_keyword
        print(f"memories={len(added)} retirements={len(retired)} before their memory={early}")  # noqa: T201 - shown with -s
