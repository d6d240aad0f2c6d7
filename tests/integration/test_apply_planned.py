"""apply_planned: stores of different databases are applied side by side, and one store's failure neither
stops the others nor goes unreported; a retry of the batch finishes the failed store's part alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory_store.embedded import EmbeddedGraphStore, EmbeddedVectorStore
from processors.projection import project
from schemas.envelope import Position
from schemas.errors import DimensionMismatch
from schemas.events import MemoryAdded
from schemas.ops import AnyOp
from schemas.topics import MEMORIES
from streams.pipeline.stages import apply_planned, database_of


def _added(memory_id: str, vector: list[float]) -> list[AnyOp]:
    return project(MemoryAdded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", cube_id="c",
                               memory_id=memory_id, user_id="u", memory=f"memory {memory_id}", embedding=vector,
                               embedding_model="test"))


async def test_a_failing_store_leaves_the_others_applied_and_is_raised(tmp_path: Path) -> None:
    graph = EmbeddedGraphStore(f"sqlite:///{tmp_path / 'store.db'}")
    vector = EmbeddedVectorStore(f"sqlite:///{tmp_path / 'vector.db'}")
    await graph.start()
    await vector.start()
    try:
        assert database_of(graph) != database_of(vector)
        await apply_planned([vector, graph], [(_added("m1", [1.0, 0.0, 0.0, 0.0]), Position(MEMORIES, 0, 0))],
                            replay=False)
        wrong = [(_added("m2", [1.0, 0.0, 0.0]), Position(MEMORIES, 0, 1))]  # the cube holds 4-d vectors
        with pytest.raises(DimensionMismatch):
            await apply_planned([vector, graph], wrong, replay=False)
        # the vector store failed first in the list, yet the graph store (another file) applied the batch
        assert await graph.checkpoint(MEMORIES, 0) == 1
        assert [m.id for m in await graph.get(["m2"], cube_id="c")] == ["m2"]
        assert await vector.checkpoint(MEMORIES, 0) == 0  # nothing of the failed batch written there
        assert [h.memory_id for h in await vector.search("c", [1.0, 0.0, 0.0, 0.0], k=5)] == ["m1"]
        fixed = [(_added("m2", [0.0, 1.0, 0.0, 0.0]), Position(MEMORIES, 0, 1))]
        await apply_planned([vector, graph], fixed, replay=False)  # the retry: the graph skips it (checkpoint)
        assert await vector.checkpoint(MEMORIES, 0) == 1
        assert [h.memory_id for h in await vector.search("c", [0.0, 1.0, 0.0, 0.0], k=1)] == ["m2"]
        assert [len(m.embedding) for m in await graph.get(["m2"], cube_id="c")] == [3]  # applied once, not again
    finally:
        await graph.aclose()
        await vector.aclose()
