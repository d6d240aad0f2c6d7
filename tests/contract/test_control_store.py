"""ControlStore contract on every adapter: embedded SQLite, and FalkorDB over its Redis protocol.

Engines: ``TestSQLiteControlStore`` -> a SQLite file per test; ``TestFalkorDBControlStore`` -> the
FalkorDB server at ``MEMOS_TEST_FALKORDB_URL`` (Redis protocol, one namespace per test).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory_store.control import ControlStore
from memory_store.control.falkordb import FalkorDBControlStore
from memory_store.control.sqlite import SQLiteControlStore
from memory_store.registry import control_store_from_url
from schemas.errors import ConfigError, StoreUnavailable
from schemas.events import UserCreated
from tests.contract.control_contract import ControlStoreContract, Feed
from tests.engines import engine_url


class TestSQLiteControlStore(ControlStoreContract):
    """The full contract; engine: embedded SQLite."""

    @pytest.fixture
    async def control_store(self, tmp_path: Path) -> AsyncIterator[ControlStore]:
        store = control_store_from_url(f"sqlite:///{tmp_path / 'control.db'}")
        assert isinstance(store, SQLiteControlStore)
        async with store:
            yield store


class TestFalkorDBControlStore(ControlStoreContract):
    """The full contract; engine: FalkorDB (Redis protocol)."""

    @pytest.fixture
    async def control_store(self, unique: str) -> AsyncIterator[ControlStore]:
        store = control_store_from_url(engine_url("falkordb"), namespace=f"test-{unique}")
        assert isinstance(store, FalkorDBControlStore)
        async with store:
            try:
                yield store
            finally:
                await store.reset()


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="control store"):
        control_store_from_url("mongodb://x")


async def test_sqlite_locked_database_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    store = SQLiteControlStore(path)
    store.db.busy_timeout_s = 0.2
    async with store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            feed = Feed()
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.apply([feed.at(UserCreated, "user:ann", user_id="ann")])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await store.apply([Feed().at(UserCreated, "user:ann", user_id="ann")]) == 1


async def test_sqlite_calls_leave_the_event_loop_free(tmp_path: Path) -> None:
    """While a write waits on a lock in SQLite, the loop keeps running other coroutines."""
    path = tmp_path / "control.db"
    store = SQLiteControlStore(path)
    store.db.busy_timeout_s = 1.0
    async with store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                ticks += 1
                await asyncio.sleep(0.01)

        try:
            write = asyncio.ensure_future(store.apply([Feed().at(UserCreated, "user:ann", user_id="ann")]))
            await tick()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await write == 1
        assert ticks >= 10


async def test_falkordb_unreachable_is_retryable() -> None:
    store = FalkorDBControlStore("falkordb://127.0.0.1:1", timeout_s=1.0)
    with pytest.raises(StoreUnavailable):
        await store.start()
