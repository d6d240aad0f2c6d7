"""The runtime over Kafka (noida-db here): redelivering every memory event leaves the projections unchanged.

The runtime uses the fixed topics (memos.*.v1) and fixed consumer groups ("deriver", "projector", ...) of
the shared test broker, so other tests' events may be on those topics: they are projected into this
test's own stores too, and every assertion is scoped to this test's cube.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.topics import MEMORIES
from streams.settings import AppSettings, LogSettings
from tests.engines import engine_url
from tests.support.log_reading import commit_as

pytestmark = pytest.mark.engine("kafka")

CONVERSATION = [
    {
        "role": "user",
        "content": "I adopted a border collie named Pixel last spring.",
        "chat_time": "2025-05-02",
    },
    {"role": "assistant", "content": "Pixel sounds energetic! Do you go hiking together?"},
    {"role": "user", "content": "Yes, we hike in the Sintra hills every Saturday. I prefer early mornings."},
]


async def _snapshot(rt: Runtime, cube: str) -> dict[str, Any]:
    memories = await rt.graph.list_memories(cube, include_retired=True)
    first = memories[0]
    vector_hits = await rt.vector.search(cube, list(first.embedding), k=20, include_retired=True)
    keyword_hits = await rt.keyword.search(cube, "Pixel hiking Sintra", k=20)
    return {
        "memories": [m.model_dump() for m in memories],
        "relations": [r.model_dump() for r in await rt.graph.relations(cube)],
        "vector": [(h.memory_id, round(h.score, 5)) for h in vector_hits],
        "keyword": [(h.memory_id, round(h.score, 5)) for h in keyword_hits],
    }


async def test_redelivery_of_every_memory_event_leaves_projections_unchanged(
    tmp_path: Path, unique: str
) -> None:
    settings = AppSettings(home=tmp_path, log=LogSettings(url=engine_url("kafka"), partitions=2))
    cube = f"cube-redeliver-{unique}"
    # Project every memory event already on the shared topic first: keyword scores use corpus-wide
    # statistics, so the "before" store must hold the same other cubes as the store after redelivery.
    async with Runtime(settings, run_stages=False) as rt:
        partitions = await rt.log.partitions(MEMORIES)
        await commit_as(rt, "projector", MEMORIES, dict.fromkeys(range(partitions), 0))
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        await service.add("ann", [cube], CONVERSATION, mode="fast", async_mode="sync")
        await service.add(
            "ann", [cube], CONVERSATION, mode="fast", async_mode="sync"
        )  # duplicates: revisions
        await service.add(
            "ann", [cube], [{"role": "user", "content": "Pixel turned two today."}], mode="fast"
        )
        before = await _snapshot(rt, cube)
        assert before["memories"] and any(m["revision"] > 0 for m in before["memories"])
        ends = await rt.log.end_offsets(MEMORIES)
        # derived events are written in transactions, whose commit markers take offsets too
        records = 0
        for p in ends:
            records += len(await rt.log.read(MEMORIES, p, 0, limit=100_000))
    assert records > 0

    async with Runtime(settings, run_stages=False) as rt:
        await commit_as(rt, "projector", MEMORIES, {p: 0 for p in ends})
        assert await rt.log.committed("projector", MEMORIES) == {p: 0 for p in ends}

    async with Runtime(settings) as rt:
        await rt.wait_for("projector", {(MEMORIES, p): end for p, end in ends.items() if end}, timeout_s=120)
        projector = next(r for r in rt._runners if r.stage.name == "projector")
        assert projector.processed >= records
        assert await _snapshot(rt, cube) == before
