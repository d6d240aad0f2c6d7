"""The search admission gate: a bounded number run, waiters are served in order, the rest get 429."""

from __future__ import annotations

import asyncio

import pytest

from memos.application.admission import SearchGate
from memos.application.errors import SearchesBusy, retry_after, status_of
from memos.application.limits import DoorLimits


async def _hold(gate: SearchGate, user: str, entered: list[str], release: asyncio.Event) -> None:
    async with gate.enter(user):
        entered.append(user)
        await release.wait()


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _queue_up(
    gate: SearchGate, names: tuple[str, ...], entered: list[str]
) -> tuple[dict[str, asyncio.Task[None]], dict[str, asyncio.Event]]:
    """One holder per name, started in order (each queues before the next starts); their tasks and releases."""
    releases = {name: asyncio.Event() for name in names}
    tasks = {}
    for name in names:
        tasks[name] = asyncio.create_task(_hold(gate, name, entered, releases[name]))
        await _settle()
    return tasks, releases


async def test_waiters_are_admitted_first_come_first_served() -> None:
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0)
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "b", "c"), entered)
    assert entered == ["a"] and gate.active == 1 and gate.waiting == 2
    releases["a"].set()
    await _settle()
    assert entered == ["a", "b"] and gate.active == 1 and gate.waiting == 1
    releases["b"].set()
    releases["c"].set()
    await asyncio.gather(*tasks.values())
    assert entered == ["a", "b", "c"]
    assert gate.active == 0 and gate.waiting == 0 and gate.stats.admitted == 3


async def test_a_search_that_cannot_start_in_time_is_refused_with_429_and_retry_after() -> None:
    gate = SearchGate(max_active=1, queue_ms=20, per_user=0, retry_after_s=2.5)
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, "a", [], release))
    await _settle()
    with pytest.raises(SearchesBusy) as refused:
        async with gate.enter("b"):
            pytest.fail("admitted although the only slot was taken")
    assert status_of(refused.value) == 429 and retry_after(refused.value) == 3
    assert "within 20 ms" in str(refused.value)
    assert gate.stats.refused_busy == 1 and gate.waiting == 0
    release.set()
    await holder
    async with gate.enter("b"):  # the slot is free again
        assert gate.active == 1
    assert gate.active == 0


async def test_one_user_cannot_hold_more_than_its_share() -> None:
    gate = SearchGate(max_active=4, queue_ms=10_000, per_user=2)
    release = asyncio.Event()
    holders = [asyncio.create_task(_hold(gate, "greedy", [], release)) for _ in range(2)]
    await _settle()
    with pytest.raises(SearchesBusy, match="'greedy' already has 2 searches"):
        async with gate.enter("greedy"):
            pytest.fail("a third search of one user was admitted")
    async with gate.enter("other"):  # another tenant is not held back by the greedy one
        assert gate.active == 3
    assert gate.stats.refused_user == 1
    release.set()
    await asyncio.gather(*holders)
    async with gate.enter("greedy"):
        pass
    assert gate.active == 0


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0)
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "b", "c"), entered)
    releases["a"].set()
    await asyncio.sleep(0)  # a releases and hands the slot to b, which has not resumed yet
    tasks["b"].cancel()
    releases["b"].set()
    releases["c"].set()
    await asyncio.gather(tasks["a"], tasks["c"])
    with pytest.raises(asyncio.CancelledError):
        await tasks["b"]
    assert entered == ["a", "c"]
    assert gate.active == 0 and gate.waiting == 0


async def test_an_error_inside_the_search_frees_the_slot() -> None:
    gate = SearchGate(max_active=1, queue_ms=0, per_user=1)
    with pytest.raises(RuntimeError):
        async with gate.enter("a"):
            raise RuntimeError("search failed")
    async with gate.enter("a"):
        assert gate.active == 1
    assert gate.active == 0


async def test_zero_turns_the_gate_off() -> None:
    gate = SearchGate(max_active=0, queue_ms=0, per_user=1)
    release = asyncio.Event()
    entered: list[str] = []
    holders = [asyncio.create_task(_hold(gate, "a", entered, release)) for _ in range(20)]
    await _settle()
    assert len(entered) == 20
    release.set()
    await asyncio.gather(*holders)


def test_the_default_runs_one_search_per_two_cores() -> None:
    import os

    assert DoorLimits().active_searches == max(1, (os.cpu_count() or 1) // 2)
    assert DoorLimits(max_active_searches=0).active_searches == 0


def test_front_ends_over_one_runtime_share_one_gate() -> None:
    from memos.application.admission import gate_for

    class Runtime:
        pass

    one, other = Runtime(), Runtime()
    options = {"max_active": 1, "queue_ms": 0, "per_user": 0, "retry_after_s": 1.0}
    assert gate_for(one, **options) is gate_for(one, **options)
    assert gate_for(one, **options) is not gate_for(other, **options)


async def test_a_user_refused_for_want_of_a_slot_waits_ahead_of_others_next_time() -> None:
    gate = SearchGate(max_active=1, queue_ms=20, per_user=0)
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, "a", [], release))
    await _settle()
    with pytest.raises(SearchesBusy):
        async with gate.enter("unlucky"):
            pytest.fail("admitted although the only slot was taken")
    gate.queue_s = 10.0
    entered: list[str] = []
    tasks, later = await _queue_up(gate, ("first", "unlucky"), entered)  # "first" queues before "unlucky"
    release.set()
    await _settle()
    assert entered == ["unlucky"]  # the refused user was served first
    later["unlucky"].set()
    await _settle()
    assert entered == ["unlucky", "first"]
    later["first"].set()
    await asyncio.gather(holder, *tasks.values())
    async with gate.enter("unlucky"):  # admitted: no longer remembered as refused
        pass
    assert not gate._was_refused("unlucky") and gate.active == 0


async def test_under_overload_the_newest_waiter_gets_the_freed_slot() -> None:
    now = [0.0]
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0, lifo_after_ms=10, clock=lambda: now[0])
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "b", "c", "d"), entered)
    now[0] = 0.005  # the oldest waiter has waited 5 ms: not overloaded yet, first come first served
    releases["a"].set()
    await _settle()
    assert entered == ["a", "b"]
    now[0] = 0.010  # the oldest (c) has waited 10 ms: the newest (d) goes first
    releases["b"].set()
    await _settle()
    assert entered == ["a", "b", "d"]
    releases["d"].set()
    releases["c"].set()
    await asyncio.gather(*tasks.values())
    assert entered == ["a", "b", "d", "c"] and gate.active == 0 and gate.waiting == 0


async def test_without_lifo_the_oldest_waiter_goes_first_however_long_it_waited() -> None:
    now = [0.0]
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0, lifo_after_ms=None, clock=lambda: now[0])
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "b", "c"), entered)
    now[0] = 60.0
    releases["a"].set()
    await _settle()
    assert entered == ["a", "b"]
    releases["b"].set()
    releases["c"].set()
    await asyncio.gather(*tasks.values())
    assert entered == ["a", "b", "c"]


def test_adaptive_lifo_is_on_by_default_and_the_settings_agree_with_the_limits() -> None:
    from streams.settings import DoorSettings

    assert DoorLimits().search_lifo_after_ms is not None
    assert DoorSettings().search_lifo_after_ms == DoorLimits().search_lifo_after_ms


async def test_under_overload_a_freed_slot_refuses_the_waiters_that_waited_too_long() -> None:
    now = [0.0]
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0, lifo_after_ms=10, overload_queue_ms=20,
                      clock=lambda: now[0])  # fmt: skip
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "old", "older"), entered)  # a runs; two wait from t=0
    now[0] = 0.015
    young_tasks, young = await _queue_up(gate, ("young",), entered)  # waits from t=15 ms
    now[0] = 0.025  # old and older have waited 25 ms (>= 20), young 10 ms
    releases["a"].set()
    await _settle()
    assert entered == ["a", "young"]  # the newest got the slot; the two late ones were refused, not admitted
    for name in ("old", "older"):
        with pytest.raises(SearchesBusy, match="within 20 ms"):
            await tasks[name]
    assert gate.stats.refused_busy == 2
    young["young"].set()
    await asyncio.gather(tasks["a"], *young_tasks.values())


async def test_without_overload_a_burst_still_waits_its_turn() -> None:
    now = [0.0]
    gate = SearchGate(max_active=1, queue_ms=10_000, per_user=0, lifo_after_ms=10, overload_queue_ms=20,
                      clock=lambda: now[0])  # fmt: skip
    entered: list[str] = []
    tasks, releases = await _queue_up(gate, ("a", "b"), entered)
    now[0] = 0.005  # b has waited 5 ms: no overload, nothing refused
    releases["a"].set()
    await _settle()
    assert entered == ["a", "b"]
    releases["b"].set()
    await asyncio.gather(*tasks.values())
    assert gate.stats.refused_busy == 0


def test_controlled_delay_is_on_by_default_and_the_settings_agree_with_the_limits() -> None:
    from streams.settings import DoorSettings

    limits = DoorLimits()
    assert limits.search_overload_queue_ms is not None
    assert limits.search_overload_queue_ms < limits.search_queue_ms
    assert DoorSettings().search_overload_queue_ms == limits.search_overload_queue_ms
