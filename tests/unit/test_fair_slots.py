"""FairSlots: a freed place goes to the waiting owner who holds fewest, then to the one served longest ago."""

from __future__ import annotations

import asyncio

import pytest

from streams.pipeline.fairness import FairSlots


async def _hold(slots: FairSlots, owner: str, name: str, order: list[str], release: asyncio.Event) -> None:
    async with slots.held(owner):
        order.append(name)
        await release.wait()


async def _settled() -> None:
    for _ in range(5):  # let every runnable task reach its next await
        await asyncio.sleep(0)


async def test_a_late_owner_is_served_before_the_queue_of_one_who_holds_places() -> None:
    slots, order = FairSlots(2), []
    releases = {name: asyncio.Event() for name in ("a1", "a2", "a3", "a4", "b1", "c1")}
    tasks = [asyncio.create_task(_hold(slots, name[0], name, order, releases[name]))
             for name in ("a1", "a2", "a3", "a4")]
    await _settled()
    tasks += [asyncio.create_task(_hold(slots, "b", "b1", order, releases["b1"])),
              asyncio.create_task(_hold(slots, "c", "c1", order, releases["c1"]))]
    await _settled()
    assert order == ["a1", "a2"] and slots.waiting() == 4
    releases["a1"].set()
    await _settled()
    assert order[2] == "b1"  # not a3, queued first
    releases["a2"].set()
    await _settled()
    assert order[3] == "c1"  # b and c hold one each, a holds none now but was served last of the three
    for name in ("b1", "c1", "a3", "a4"):
        releases[name].set()
    await asyncio.gather(*tasks)
    assert order[4:] == ["a3", "a4"] and slots.busy == 0 and slots.waiting() == 0


async def test_a_cancelled_waiter_leaves_and_a_place_is_never_lost() -> None:
    slots, order = FairSlots(1), []
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(slots, "a", "a1", order, release))
    await _settled()
    waiter = asyncio.create_task(_hold(slots, "b", "b1", order, asyncio.Event()))
    later = asyncio.create_task(_hold(slots, "c", "c1", order, release))
    await _settled()
    waiter.cancel()
    await _settled()
    assert slots.waiting() == 1
    release.set()
    await asyncio.gather(holder, later)
    assert order == ["a1", "c1"] and slots.busy == 0 and not slots.holding
    with pytest.raises(asyncio.CancelledError):
        await waiter


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(0)


async def test_one_owner_holds_at_most_per_owner_places_and_a_newcomer_takes_a_free_one_at_once() -> None:
    slots, order = FairSlots(3, per_owner=2), []
    releases = {name: asyncio.Event() for name in ("m1", "m2", "m3", "a1")}
    tasks = [asyncio.create_task(_hold(slots, "m", name, order, releases[name])) for name in ("m1", "m2", "m3")]
    await _settled()
    assert order == ["m1", "m2"] and slots.busy == 2 and slots.waiting() == 1  # m3 waits though a place is free
    tasks.append(asyncio.create_task(_hold(slots, "a", "a1", order, releases["a1"])))
    await _settled()
    assert order == ["m1", "m2", "a1"]  # the free place, at once
    releases["m1"].set()
    await _settled()
    assert order[3] == "m3"
    for release in releases.values():
        release.set()
    await asyncio.gather(*tasks)
    assert slots.busy == 0 and not slots.holding
