"""Embedded stores checkpoint their SQLite log in a background thread per file, not inside their commits."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

from memory_store.embedded import EmbeddedGraphStore, EmbeddedVectorStore
from memory_store.embedded.wal import SAFETY_PAGES, WalCheckpointer
from schemas.ops import UpsertMemory
from tests.contract.graph_contract import make_memory, position


def _wal_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"memos-wal:{path.resolve()}"]


async def test_commits_reach_the_database_file_through_the_background_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    records = [make_memory("c1", f"m{i}", memory=f"memory {i} " + "words " * 200) for i in range(300)]
    async with EmbeddedGraphStore(f"sqlite:///{db}") as store:
        with store.db.write() as conn:  # the writer's own checkpoint is only a safety net
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == SAFETY_PAGES
        wal = store.db._wal
        assert isinstance(wal, WalCheckpointer)
        before = wal.checkpoints
        assert await store.apply([UpsertMemory(memory=r) for r in records], position("wal", 1))
        assert wal.flush()
        assert wal.checkpoints > before
        # the database file alone (its log left behind) already holds the batch: the checkpoint copied it
        alone = tmp_path / "alone.db"
        shutil.copyfile(db, alone)
        with sqlite3.connect(alone) as copy:
            assert copy.execute("SELECT count(*) FROM graph_memories").fetchone()[0] == len(records)


async def test_stores_sharing_a_file_share_one_checkpointer_that_stops_with_the_last(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    graph = EmbeddedGraphStore(f"sqlite:///{db}")
    vector = EmbeddedVectorStore(f"sqlite:///{db}")
    await graph.start()
    await vector.start()
    assert graph.db._wal is vector.db._wal is not None
    assert len(_wal_threads(db)) == 1
    await graph.aclose()
    assert len(_wal_threads(db)) == 1  # the vector store still writes
    assert await vector.apply([UpsertMemory(memory=make_memory("c1", "m1"))], position("wal", 1))
    await vector.aclose()
    assert _wal_threads(db) == []


async def test_an_in_memory_database_has_no_checkpointer() -> None:
    async with EmbeddedGraphStore("sqlite:///:memory:") as store:
        assert store.db._wal is None
        assert await store.apply([UpsertMemory(memory=make_memory("c1", "m1"))], position("wal", 1))


def test_a_failed_checkpoint_is_logged_and_the_thread_goes_on(tmp_path: Path) -> None:
    not_a_database = tmp_path / "junk.db"
    not_a_database.write_bytes(b"this is not a sqlite database" * 200)
    wal = WalCheckpointer(str(not_a_database), interval_s=0.0)
    try:
        assert wal.flush()
        assert wal.flush()  # served again after a failure
        assert wal.checkpoints >= 2
    finally:
        wal.close()
    assert not wal._thread.is_alive()
