"""The embedded log's fast append: on the caller's thread when nothing is queued and the write lock is free,
through the writer thread otherwise; the same records and offsets either way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog


def _records(n: int, start: int = 0) -> list[OutgoingRecord]:
    return [OutgoingRecord("t.v1", b"k", f"v{start + i}".encode()) for i in range(n)]


async def test_an_append_with_the_lock_free_commits_on_the_callers_thread(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path / "log.db")
    await log.start()
    try:
        writer = log._require().writer  # noqa: SLF001 - what the fast path bypasses
        threads: list[int] = []
        done, positions = writer.try_now(lambda conn: threads.append(threading.get_ident()) or 7)
        assert (done, positions) == (True, 7)
        assert threads == [threading.get_ident()]  # ran here, no hop to the writer thread
        first = await log.append_batch(_records(3))
        second = await log.append_batch(_records(2, 3))
        assert [p.offset for p in first + second] == [0, 1, 2, 3, 4]
        read = await log.read("t.v1", first[0].partition, 0, limit=10)
        assert [r.value for r in read] == [f"v{i}".encode() for i in range(5)]
    finally:
        await log.aclose()


async def test_with_the_write_lock_held_elsewhere_the_append_waits_on_the_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = LocalEventLog(path)
    await log.start()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        writer = log._require().writer  # noqa: SLF001
        other.execute("BEGIN IMMEDIATE")  # another process's transaction, say
        assert writer.try_now(lambda conn: 1) == (False, None)  # refused at once, not blocked
        pending = asyncio.ensure_future(log.append_batch(_records(1)))
        await asyncio.sleep(0.05)
        assert not pending.done()  # queued for the writer thread, which waits for the lock
        other.execute("COMMIT")
        (position,) = await asyncio.wait_for(pending, 30)
        assert position.offset == 0
        assert writer.try_now(lambda conn: 2) == (True, 2)  # free again: the fast path is back
    finally:
        other.close()
        await log.aclose()
