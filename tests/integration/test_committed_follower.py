"""Waiting on a stage another process hosts: one poll of the log's committed offsets per round, however many
wait; a wait ends once the group committed past its targets, or times out naming the group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from memos.followers import CommittedFollower
from streams.log.base import EventLog, OutgoingRecord
from streams.log.registry import event_log_from_url


class _Counting:
    """The real log, counting reads of committed offsets."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.reads = 0

    async def committed(self, group_id: str, topic: str) -> dict[int, int]:
        self.reads += 1
        return await self.log.committed(group_id, topic)


@asynccontextmanager
async def _log_with(records: int, tmp_path: Path) -> AsyncIterator[EventLog]:
    """An embedded log whose topic "t" (one partition) holds ``records`` records."""
    log = event_log_from_url(f"sqlite:///{tmp_path / 'log.db'}", partitions=1)
    await log.start()
    try:
        await log.create_topic("t", partitions=1)
        await log.append_batch([OutgoingRecord("t", b"k", f"v{i}".encode()) for i in range(records)])
        yield log
    finally:
        await log.aclose()


async def _consume_and_commit(log: EventLog, records: int) -> None:
    """Group "g" reads ``records`` records of "t" and commits them."""
    consumer = log.consumer(["t"], group_id="g")
    async with consumer:
        got: list[object] = []
        while len(got) < records:
            got += await consumer.poll(timeout_s=0.5)
        await consumer.commit()


async def test_many_waiters_share_one_poll_and_all_return_once_the_group_commits(tmp_path: Path) -> None:
    async with _log_with(3, tmp_path) as log:
        counting = _Counting(log)
        follower = CommittedFollower(counting, interval_s=0.01)  # type: ignore[arg-type]
        waits = [asyncio.create_task(follower.wait("g", {("t", 0): 3}, timeout_s=30)) for _ in range(20)]
        while follower.polls < 3:  # the waiters are all polling (nothing committed yet)
            await asyncio.sleep(0.01)
        assert not any(w.done() for w in waits)
        await _consume_and_commit(log, 3)
        await asyncio.gather(*waits)
        assert counting.reads <= follower.polls + 1  # one read per round (one topic), not one per waiter
        with pytest.raises(TimeoutError, match="'g'"):
            await follower.wait("g", {("t", 0): 4}, timeout_s=0.1)
        await follower.aclose()


async def test_waiters_are_woken_only_when_the_group_moved(tmp_path: Path) -> None:
    async with _log_with(2, tmp_path) as log:
        follower = CommittedFollower(log, interval_s=0.01)
        checks = 0
        reached = follower.progress.reached  # what a woken waiter runs

        def counted(group: str, targets: dict[tuple[str, int], int]) -> bool:
            nonlocal checks
            checks += 1
            return reached(group, targets)

        follower.progress.reached = counted  # type: ignore[method-assign]
        waits = [asyncio.create_task(follower.wait("g", {("t", 0): 2}, timeout_s=30)) for _ in range(10)]
        while follower.polls < 2:
            await asyncio.sleep(0.01)
        settled = checks
        while follower.polls < 8:  # six rounds in which nothing is committed
            await asyncio.sleep(0.01)
        assert checks == settled  # nobody was woken for nothing
        await _consume_and_commit(log, 2)
        await asyncio.wait_for(asyncio.gather(*waits), 30)
        await follower.aclose()
