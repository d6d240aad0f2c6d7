"""The replay helper process: a replay that lends the tantivy index to it leaves every store exactly as a
replay in one process does, whether it takes over at the start or part-way, and when it fails."""

from __future__ import annotations

import functools
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from memos.runtime import Runtime
from processors.projection import project
from schemas.envelope import Position
from schemas.errors import StoreUnavailable
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised
from schemas.topics import MEMORIES
from streams.pipeline.runner import event_record
from streams.replay import replay_cube
from streams.replay_helper import HelperJob, ReplayHelper
from streams.settings import AppSettings

CUBE = "helper_cube"
QUERIES = ("memory number 17 topic", "place 3", "revised memory", "topic 40 and place 7")


def _events(n: int) -> list[MemoryAdded | MemoryRevised | MemoryRetired]:
    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    out: list[MemoryAdded | MemoryRevised | MemoryRetired] = []
    for i in range(n):
        vec = rng.standard_normal(384).astype(np.float32)
        vec /= np.linalg.norm(vec)
        base: dict[str, Any] = {"event_id": uuid.uuid4(), "occurred_at": now, "key": CUBE, "cube_id": CUBE}
        if i % 10 == 9:
            out.append(MemoryRetired(**base, memory_id=f"m{i - 2}", reason="superseded"))
        elif i % 10 == 8:
            out.append(MemoryRevised(**base, memory_id=f"m{i - 5}", memory=f"revised memory {i} place {i % 11}",
                                     revision=1, embedding=vec.tolist(), embedding_model="test"))
        else:
            out.append(MemoryAdded(**base, memory_id=f"m{i}", user_id="u", memory=f"memory number {i} about topic "
                                   f"{i % 97} and place {i % 13}", embedding=vec.tolist(), embedding_model="test"))
    return out


async def _state(rt: Runtime, home: Path) -> dict[str, Any]:
    """What a replay must reproduce: keyword and vector rankings (searched in this process), the index's rows
    and statistics, the vector rows, and the graph's current memories."""
    searches = {q: [(h.memory_id, round(h.score, 9)) for h in await rt.keyword.search(CUBE, q, k=20)]
                for q in QUERIES}
    rng = np.random.default_rng(5)
    nearest = [[(h.memory_id, round(h.score, 6)) for h in await rt.vector.search(CUBE, rng.standard_normal(384).tolist(),
                                                                                  k=10)] for _ in range(4)]
    with sqlite3.connect(home / "vector.db") as conn:
        vectors = conn.execute("SELECT * FROM vector_items WHERE cube_id=? ORDER BY memory_id", (CUBE,)).fetchall()
    with sqlite3.connect(home / "keyword.db") as conn:
        slot, docs, tokens = conn.execute("SELECT slot, docs, tokens FROM kwt_cubes WHERE cube_id=?",
                                          (CUBE,)).fetchone()
        rows = conn.execute(f'SELECT * FROM "kwt_docs_{slot}" ORDER BY doc_no').fetchall()
    memories = sorted((m.id, m.memory, m.status) for m in await rt.graph.list_memories(CUBE, limit=10_000))
    return {"searches": searches, "stats": (docs, tokens), "rows": rows, "memories": memories, "nearest": nearest,
            "vectors": vectors, "live": rt.vector.stats().get(CUBE)}


async def _filled(rt: Runtime, n: int = 700) -> None:
    events = _events(n)
    for start in range(0, n, 250):
        await rt.log.append_batch([event_record(e) for e in events[start:start + 250]])


async def _stray(rt: Runtime) -> None:
    """A document in the cube's keyword index and a vector in its vector store that the log does not hold."""
    event = MemoryAdded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=CUBE, cube_id=CUBE,
                        memory_id="stray", user_id="u", memory="memory number 17 topic stray place 3",
                        embedding=[1.0] + [0.0] * 383, embedding_model="test")
    for store in (rt.keyword, rt.vector):
        await store.apply(project(event), Position(MEMORIES, 0, 10**9), replay=True)


async def _replay(rt: Runtime, helper: ReplayHelper | None) -> int:
    return await replay_cube(rt.log, rt.stores, rt.projection_stage.lock, CUBE, batch=100, helper=helper)


class LateHelper(ReplayHelper):
    """Says it is ready only from the ``after``-th time it is asked (the helper itself is real)."""

    def __init__(self, preload: Sequence[str], after: int) -> None:
        super().__init__(preload)
        self.asked, self.after = 0, after

    def ready(self) -> bool:
        self.asked += 1
        return self.asked >= self.after and super().ready()


class DyingHelper(ReplayHelper):
    """Its process is killed as soon as it is given a job."""

    def begin(self, *args: Any, **kwargs: Any) -> HelperJob:
        job = super().begin(*args, **kwargs)
        assert self._process is not None
        self._process.kill()
        return job


class RefusingHelper(ReplayHelper):
    """Ready, but refuses every job."""

    def begin(self, *args: Any, **kwargs: Any) -> HelperJob:
        raise StoreUnavailable("refused by the test")


PRELOAD = ["memory_store.embedded.keyword_tantivy"]


@pytest.mark.parametrize("kind", ["from the start", "part-way"])
async def test_a_helper_replay_leaves_the_state_of_a_replay_here(tmp_path: Path, kind: str) -> None:
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:
        await _filled(rt)
        assert await _replay(rt, None) == 700
        expected = await _state(rt, tmp_path)
        assert expected["rows"] and all(expected["searches"].values()) and expected["vectors"]
        await _stray(rt)  # only a replay removes it
        assert await _state(rt, tmp_path) != expected
        helper = ReplayHelper(PRELOAD) if kind == "from the start" else LateHelper(PRELOAD, after=4)
        helper.start()
        try:
            assert await helper.wait_ready(60.0)
            assert await _replay(rt, helper) == 700
            assert helper.jobs == 1
            assert await _state(rt, tmp_path) == expected
            if isinstance(helper, LateHelper):  # asked before the replay and at batches 1-3: taken over at 3
                assert helper.asked == 4
        finally:
            await helper.aclose()
        assert not helper.alive


async def test_a_failing_helper_leaves_the_stores_replayed_here(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the helper's index folder would be")
    async with Runtime(AppSettings(home=tmp_path / "home"), run_stages=False) as rt:
        await _filled(rt)
        await _replay(rt, None)
        expected = await _state(rt, tmp_path / "home")
        assert isinstance(rt.keyword, TantivyKeywordIndex)
        # the helper opens an index it cannot create: its job fails, after it read every batch
        lending = rt.keyword.lending()
        assert lending is not None
        rt.keyword.lending = lambda: lending._replace(  # type: ignore[method-assign]
            opener=functools.partial(TantivyKeywordIndex, f"tantivy:///{blocker / 'keyword.db'}"))
        for helper in (ReplayHelper(PRELOAD), DyingHelper(PRELOAD)):
            helper.start()
            try:
                assert await helper.wait_ready(60.0)
                await _stray(rt)  # only a replay removes it
                assert await _state(rt, tmp_path / "home") != expected
                with caplog.at_level(logging.WARNING, logger="streams.replay"):
                    assert await _replay(rt, helper) == 700
                assert helper.jobs == 0
                assert "replay helper failed" in caplog.text
                assert await _state(rt, tmp_path / "home") == expected
            finally:
                await helper.aclose()
            caplog.clear()


async def test_the_runtime_starts_its_helper_with_a_replay_unless_turned_off(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path / "on"), run_stages=False) as rt:
        await _filled(rt, 50)
        assert rt.replay_helper is None
        assert await rt.replay_cube(CUBE) == 50
        helper = rt.replay_helper
        assert helper is not None and helper.alive and helper.preload == tuple(PRELOAD)
        assert await helper.wait_ready(60.0)
        assert await rt.replay_cube(CUBE) == 50  # taken over from the start this time
        assert helper.jobs == 1
    assert not helper.alive
    off = AppSettings(home=tmp_path / "off")
    off.stores.replay_helper = False
    async with Runtime(off, run_stages=False) as rt:
        await _filled(rt, 50)
        assert await rt.replay_cube(CUBE) == 50
        assert rt.replay_helper is None and rt.start_replay_helper() is None


async def test_a_store_in_memory_is_not_lent(tmp_path: Path) -> None:
    assert TantivyKeywordIndex("tantivy:///:memory:").lending() is None
    assert TantivyKeywordIndex(f"tantivy:///{tmp_path / 'k.db'}").lending() is not None


async def test_a_helper_that_refuses_the_job_leaves_the_replay_here(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    async with Runtime(AppSettings(home=tmp_path), run_stages=False) as rt:
        await _filled(rt)
        await _replay(rt, None)
        expected = await _state(rt, tmp_path)
        await _stray(rt)
        helper = RefusingHelper(PRELOAD)
        helper.start()
        try:
            assert await helper.wait_ready(60.0)
            with caplog.at_level(logging.WARNING, logger="streams.replay"):
                assert await _replay(rt, helper) == 700
            assert "replay helper not used" in caplog.text and "replay helper failed" not in caplog.text
            assert helper.jobs == 0 and await _state(rt, tmp_path) == expected
        finally:
            await helper.aclose()
