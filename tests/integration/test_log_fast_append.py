"""The embedded log's fast append: on the caller's thread when nothing is queued and the write lock is free,
on the caller's event loop once another connection lets the lock go (``LockWait``), through the writer thread
otherwise; the same records and offsets either way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from schemas.errors import BrokerUnavailable, TransportError
from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (the writes under test reach their waiting state)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


def _records(n: int, start: int = 0) -> list[OutgoingRecord]:
    return [OutgoingRecord("t.v1", b"k", f"v{start + i}".encode()) for i in range(n)]


@asynccontextmanager
async def _lock_held_elsewhere(
    tmp_path: Path, *, busy_timeout_s: float = 30.0
) -> AsyncIterator[tuple[LocalEventLog, sqlite3.Connection]]:
    """A started log, and another connection to its file holding the write lock (another process's
    transaction, say) until the test commits it."""
    path = tmp_path / "log.db"
    log = LocalEventLog(path, busy_timeout_s=busy_timeout_s)
    await log.start()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield log, other
    finally:
        other.close()
        await log.aclose()


async def test_an_append_with_the_lock_free_commits_on_the_callers_thread(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path / "log.db")
    await log.start()
    try:
        writer = log._require().writer  # noqa: SLF001 - what the fast path bypasses
        threads: list[int] = []
        assert writer.attempt([lambda conn: threads.append(threading.get_ident()) or 7]) == ("done", [7])
        assert threads == [threading.get_ident()]  # ran here, no hop to the writer thread
        first = await log.append_batch(_records(3))
        second = await log.append_batch(_records(2, 3))
        assert [p.offset for p in first + second] == [0, 1, 2, 3, 4]
        read = await log.read("t.v1", first[0].partition, 0, limit=10)
        assert [r.value for r in read] == [f"v{i}".encode() for i in range(5)]
    finally:
        await log.aclose()


async def test_with_the_write_lock_held_elsewhere_appends_wait_on_the_loop_and_commit_together(
    tmp_path: Path,
) -> None:
    async with _lock_held_elsewhere(tmp_path) as (log, other):
        writer = log._require().writer  # noqa: SLF001
        assert writer.attempt([lambda conn: 1]) == ("busy", None)  # refused at once, not blocked
        pending = [asyncio.ensure_future(log.append_batch(_records(1, n))) for n in range(5)]
        threads: list[int] = []
        job = asyncio.ensure_future(writer.run(lambda conn: threads.append(threading.get_ident()) or 9))
        wait = writer._lock_wait()  # noqa: SLF001
        await _until(lambda: wait.waiting == 6)
        await asyncio.sleep(0.05)  # a few polls while the lock is held: none of them may commit
        assert not any(p.done() for p in pending) and not job.done() and wait.waiting == 6
        assert writer._inflight == 0  # noqa: SLF001 - nothing went to the writer thread
        other.execute("COMMIT")
        positions = [p for batch in await asyncio.wait_for(asyncio.gather(*pending), 30) for p in batch]
        assert await asyncio.wait_for(job, 30) == 9
        assert [p.offset for p in positions] == [0, 1, 2, 3, 4]  # in the order they came
        assert threads == [threading.get_ident()]  # ran on this loop's thread
        assert wait.commits == 1  # all six in one transaction
        read = await log.read("t.v1", positions[0].partition, 0, limit=10)
        assert [r.value for r in read] == [f"v{i}".encode() for i in range(5)]
        assert writer.attempt([lambda conn: 2]) == ("done", [2])  # free again: the fast path is back


async def test_a_failing_job_among_those_waiting_for_the_lock_fails_alone(tmp_path: Path) -> None:
    async with _lock_held_elsewhere(tmp_path) as (log, other):
        writer = log._require().writer  # noqa: SLF001
        first = asyncio.ensure_future(log.append_batch(_records(1)))

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO log_meta (name, value) VALUES ('scratch', 1)")
            raise ValueError("this job fails")

        failing = asyncio.ensure_future(writer.run(bad))
        last = asyncio.ensure_future(log.append_batch(_records(1, 1)))
        await _until(lambda: writer._lock_wait().waiting == 3)  # noqa: SLF001
        other.execute("COMMIT")
        with pytest.raises(ValueError, match="this job fails"):
            await asyncio.wait_for(failing, 30)
        assert [p.offset for p in await first + await last] == [0, 1]
        assert await writer.run(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM log_meta WHERE name = 'scratch'").fetchone()[0]) == 0  # rolled back


async def test_a_job_waiting_past_the_busy_timeout_fails_as_the_log_being_unavailable(tmp_path: Path) -> None:
    async with _lock_held_elsewhere(tmp_path, busy_timeout_s=0.2) as (log, other):
        with pytest.raises(BrokerUnavailable, match="locked"):
            await asyncio.wait_for(log.append_batch(_records(1)), 30)
        other.execute("COMMIT")
        (position,) = await log.append_batch(_records(1, 1))
        assert position.offset == 0  # the timed-out append was not written


async def test_a_waiter_cancelled_before_its_turn_leaves_its_append_unwritten(tmp_path: Path) -> None:
    async with _lock_held_elsewhere(tmp_path) as (log, other):
        wait = log._require().writer._lock_wait()  # noqa: SLF001
        cancelled = asyncio.ensure_future(log.append_batch(_records(1)))
        await _until(lambda: wait.waiting == 1)
        cancelled.cancel()
        kept = asyncio.ensure_future(log.append_batch(_records(1, 1)))
        await _until(lambda: wait.waiting == 2 or (wait.waiting == 1 and cancelled.done()))
        other.execute("COMMIT")
        (position,) = await asyncio.wait_for(kept, 30)
        assert cancelled.cancelled()
        read = await log.read("t.v1", position.partition, 0, limit=10)
        assert [r.value for r in read] == [b"v1"]


async def test_a_write_waiting_for_the_lock_fails_when_the_log_closes(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = LocalEventLog(path)
    await log.start()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(log.append_batch(_records(1)))
        wait = log._require().writer._lock_wait()  # noqa: SLF001
        await _until(lambda: wait.waiting == 1)
        await log.aclose()
        with pytest.raises(TransportError, match="closed"):
            await asyncio.wait_for(pending, 30)
    finally:
        other.close()


async def test_a_consumer_commit_takes_the_fast_path_and_never_blocks_appends_behind_it(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path / "log.db")
    await log.start()
    try:
        writer = log._require().writer  # noqa: SLF001
        await log.append_batch(_records(3))
        consumer = log.consumer(["t.v1"], group_id="g")
        records = await consumer.poll(max_records=10, timeout_s=5)
        assert len(records) == 3
        threads: list[int] = []
        assert await writer.run(lambda conn: threads.append(threading.get_ident()) or 5) == 5
        assert threads == [threading.get_ident()]  # ran here: nothing was queued on the writer thread
        await consumer.commit()
        assert await log.committed("g", "t.v1") == {records[0].position.partition: 3}
        assert writer.attempt([lambda conn: 1]) == ("done", [1])  # nothing in flight: appends keep the fast path
        await consumer.aclose()
    finally:
        await log.aclose()


async def test_a_commit_waits_for_a_lock_held_elsewhere_and_completes_once_it_is_let_go(tmp_path: Path) -> None:
    async with _lock_held_elsewhere(tmp_path) as (log, other):
        writer = log._require().writer  # noqa: SLF001
        pending = asyncio.ensure_future(writer.run(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]))
        await asyncio.sleep(0.05)
        assert not pending.done()  # on the writer thread, trying again while the lock is held
        other.execute("COMMIT")
        assert await asyncio.wait_for(pending, 30) == 42


async def test_the_writer_thread_checkpoints_the_wal_that_fast_commits_grew_once_idle(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = LocalEventLog(path)
    await log.start()
    try:
        before = path.stat().st_size
        for start in range(0, 2000, 100):  # ~2 MB through the fast path, which never checkpoints
            await log.append_batch([OutgoingRecord("t.v1", b"k", b"x" * 1000 + str(start + i).encode())
                                    for i in range(100)])
        deadline = asyncio.get_running_loop().time() + 30
        while path.stat().st_size < before + 1_000_000:  # the pages reach the database file only by a checkpoint
            assert asyncio.get_running_loop().time() < deadline, "the WAL was never checkpointed"
            await asyncio.sleep(0.05)
    finally:
        await log.aclose()
