"""The replay gate: one replay per cube (a second request joins it), a bounded share per user and per process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from memos.application.errors import ReplaysBusy, retry_after, status_of
from memos.application.replays import ReplayGate


class Replays:
    """Replays that run until released, counting how often each cube was started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    def of(self, cube: str, events: int = 3) -> Callable[[Callable[[int, int], None]], Coroutine[Any, Any, int]]:
        async def replay(report: Callable[[int, int], None]) -> int:
            self.started.append(cube)
            report(1, events)
            await self.release.wait()
            report(events, events)
            return events

        return replay


async def test_a_second_request_for_a_cube_joins_its_running_replay() -> None:
    gate, replays = ReplayGate(per_user=1, at_once=2, retry_after_s=5), Replays()
    first = gate.start("c", "ann", replays.of("c"))
    await asyncio.sleep(0)
    heard: list[tuple[int, int]] = []
    second = gate.start("c", "bob", replays.of("c"), progress=lambda d, t: heard.append((d, t)))
    assert second is first and gate.running("c")
    assert heard == [(1, 3)]  # a joiner hears where the replay stands at once
    replays.release.set()
    assert await asyncio.gather(first, second) == [3, 3]
    assert replays.started == ["c"] and heard[-1] == (3, 3)
    assert not gate.running("c")
    again = gate.start("c", "ann", replays.of("c"))  # once it ended, a new request starts a new replay
    assert again is not first and await again == 3
    assert replays.started == ["c", "c"]


async def test_a_user_past_its_share_is_refused_with_retry_after_and_operators_are_not_counted() -> None:
    gate, replays = ReplayGate(per_user=1, at_once=2, retry_after_s=5), Replays()
    running = gate.start("a1", "ann", replays.of("a1"))
    with pytest.raises(ReplaysBusy, match="door.replays_per_user") as refused:
        gate.start("a2", "ann", replays.of("a2"))
    assert status_of(refused.value) == 429 and retry_after(refused.value) == 5
    assert not gate.running("a2")
    operator = gate.start("ops", None, replays.of("ops"))  # the CLI's replay: not limited, not counted
    bob = gate.start("b1", "bob", replays.of("b1"))
    with pytest.raises(ReplaysBusy, match="door.replays_at_once"):
        gate.start("c1", "cid", replays.of("c1"))
    replays.release.set()
    assert await asyncio.gather(running, operator, bob) == [3, 3, 3]
    await asyncio.sleep(0)
    assert await gate.start("a2", "ann", replays.of("a2")) == 3  # admitted once its share is free
    assert sorted(replays.started) == ["a1", "a2", "b1", "ops"]


async def test_zero_means_no_limit() -> None:
    gate, replays = ReplayGate(per_user=0, at_once=0, retry_after_s=1), Replays()
    tasks = [gate.start(f"c{n}", "ann", replays.of(f"c{n}")) for n in range(5)]
    replays.release.set()
    assert await asyncio.gather(*tasks) == [3] * 5


async def test_a_caller_that_goes_away_leaves_the_replay_running() -> None:
    gate, replays = ReplayGate(per_user=1, at_once=2, retry_after_s=5), Replays()
    task = gate.start("c", "ann", replays.of("c"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 0.01)
    assert not task.cancelled() and gate.running("c")
    replays.release.set()
    assert await task == 3


async def test_a_failed_replay_fails_every_caller_and_frees_the_cube() -> None:
    gate = ReplayGate(per_user=1, at_once=2, retry_after_s=5)

    async def broken(report: Callable[[int, int], None]) -> int:
        await asyncio.sleep(0)
        raise RuntimeError("store gone")

    first = gate.start("c", "ann", broken)
    second = gate.start("c", "bob", broken)
    for task in (first, second):
        with pytest.raises(RuntimeError, match="store gone"):
            await task
    await asyncio.sleep(0)
    assert not gate.running("c")
