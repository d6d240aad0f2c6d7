"""A record the stores refuse: live projection dead-letters it and goes on; a replay (here, or with the helper
process) skips the same record and rebuilds the cube exactly as it was live, instead of stopping part-way."""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos.runtime import Runtime
from schemas.events import MemoryAdded, MemoryRetired
from streams.replay import replay_cube
from streams.replay_helper import ReplayHelper
from streams.settings import AppSettings

CUBE = "refused_cube"


def _events(n: int, poison: set[int]) -> list[MemoryAdded | MemoryRetired]:
    """Memories of one cube, a few retired; those at ``poison`` carry a confidence the graph store refuses."""
    rng = np.random.default_rng(11)
    out: list[MemoryAdded | MemoryRetired] = []
    for i in range(n):
        vec = rng.standard_normal(384).astype(np.float32)
        vec /= np.linalg.norm(vec)
        base: dict[str, Any] = {"event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "key": CUBE,
                                "cube_id": CUBE}
        if i % 10 == 9:
            out.append(MemoryRetired(**base, memory_id=f"m{i - 3}", reason="superseded"))
            continue
        out.append(MemoryAdded(**base, memory_id=f"m{i}", user_id="u", memory=f"memory {i} about topic {i % 7}",
                               embedding=vec.tolist(), embedding_model="test",
                               confidence=math.nan if i in poison else 0.9))
    return out


async def _state(rt: Runtime, home: Path) -> dict[str, Any]:
    """Every store's view of the cube: the graph's memories, keyword hits, vector rows."""
    memories = sorted((m.id, m.memory, m.status) for m in await rt.graph.list_memories(CUBE, limit=10_000))
    hits = {q: sorted(h.memory_id for h in await rt.keyword.search(CUBE, q, k=50)) for q in ("topic 3", "memory 41")}
    with sqlite3.connect(home / "vector.db") as conn:
        vectors = conn.execute("SELECT memory_id FROM vector_items WHERE cube_id=? ORDER BY memory_id",
                               (CUBE,)).fetchall()
    return {"memories": memories, "hits": hits, "vectors": vectors}


@pytest.mark.parametrize("helper_used", [False, True])
async def test_a_replay_skips_what_live_projection_dead_lettered(tmp_path: Path, helper_used: bool,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    poison = {13, 57, 58}
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        await rt.settle(await rt.publish(_events(120, poison)))
        live = await _state(rt, tmp_path)
        held = {m[0] for m in live["memories"]}
        retired = {f"m{i - 3}" for i in range(9, 120, 10)}
        assert held == {f"m{i}" for i in range(120) if i % 10 != 9 and i not in poison} - retired  # dead-lettered
        helper = ReplayHelper(["memory_store.embedded.keyword_tantivy"]) if helper_used else None
        if helper is not None:
            helper.start()
            assert await helper.wait_ready(60.0)
        try:
            with caplog.at_level(logging.WARNING, logger="streams.replay"):
                await replay_cube(rt.log, rt.stores, rt.projection_stage.lock, CUBE, batch=25, helper=helper)
        finally:
            if helper is not None:
                await helper.aclose()
        assert await _state(rt, tmp_path) == live  # every other record is back, nothing more
        skipped = [r.getMessage() for r in caplog.records if "replay skipped a record" in r.getMessage()]
        assert len(skipped) == len(poison) and all("confidence" in m for m in skipped)
