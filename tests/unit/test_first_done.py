"""first_done: the first wait to finish decides; the others never live on, also when the caller is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from memos.followers import first_done


async def test_the_first_decides_and_the_rest_are_cancelled() -> None:
    slow_cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise

    async def fast() -> None:
        return None

    await first_done(slow(), fast())
    await asyncio.wait_for(slow_cancelled.wait(), 5)

    async def failing() -> None:
        raise TimeoutError("the lane did not get there")

    with pytest.raises(TimeoutError, match="did not get there"):
        await first_done(failing(), slow())


async def test_a_cancelled_caller_leaves_no_wait_behind() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waiting() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(first_done(waiting()))
    await asyncio.wait_for(started.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 5)
