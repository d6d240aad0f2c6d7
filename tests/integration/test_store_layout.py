"""The embedded stores' files: the graph in store.db, vectors in vector.db, and a home made while the vectors
shared store.db keeps them there."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from memos.runtime import Runtime
from processors.projection import project
from schemas.envelope import Position
from schemas.events import MemoryAdded
from schemas.topics import MEMORIES
from streams.settings import AppSettings

VECTOR = [1.0, 0.0, 0.0, 0.0]


async def _add(rt: Runtime) -> None:
    event = MemoryAdded(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", cube_id="c", memory_id="m1",
                        user_id="u", memory="the user likes tea", embedding=VECTOR, embedding_model="test")
    for store in rt.stores:
        await store.apply(project(event), Position(MEMORIES, 0, 0))


def _vector_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return conn.execute("SELECT count(*) FROM vector_items").fetchone()[0] if "vector_items" in tables else 0


async def test_a_new_home_keeps_vectors_in_their_own_file(tmp_path: Path) -> None:
    settings = AppSettings(home=tmp_path)
    assert settings.store_url("vector") == f"sqlite:///{tmp_path / 'vector.db'}"
    async with Runtime(settings, run_stages=False) as rt:
        await _add(rt)
        assert [h.memory_id for h in await rt.vector.search("c", VECTOR, k=1)] == ["m1"]
    assert _vector_rows(tmp_path / "vector.db") == 1 and _vector_rows(tmp_path / "store.db") == 0
    assert AppSettings(home=tmp_path).store_url("vector") == f"sqlite:///{tmp_path / 'vector.db'}"


async def test_a_home_made_with_vectors_in_store_db_keeps_them_there(tmp_path: Path) -> None:
    legacy = AppSettings(home=tmp_path)
    legacy.stores.vector_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with Runtime(legacy, run_stages=False) as rt:
        await _add(rt)
    assert not (tmp_path / "vector.db").exists()
    settings = AppSettings(home=tmp_path)
    assert settings.store_url("vector") == f"sqlite:///{tmp_path / 'store.db'}"
    async with Runtime(settings, run_stages=False) as rt:
        assert [h.memory_id for h in await rt.vector.search("c", VECTOR, k=1)] == ["m1"]
    assert not (tmp_path / "vector.db").exists()
    explicit = AppSettings(home=tmp_path)
    explicit.stores.vector_url = "sqlite:///elsewhere.db"
    assert explicit.store_url("vector") == "sqlite:///elsewhere.db"
