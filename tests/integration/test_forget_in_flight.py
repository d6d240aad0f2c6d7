"""Forgetting a cube while an add to it is being derived: nothing derived from it lands after the forget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from memos.application.cube_guard import CubeGuard
from memos.application.errors import CubeBusy
from memos.application.limits import DoorLimits
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.topics import CONVERSATIONS, MEMORIES, TASKS
from streams.log.base import partition_for
from streams.settings import AppSettings

SECRET = [{"role": "user", "content": "My bank PIN is 4921 and my locker code is 77-31."}]


@asynccontextmanager
async def held_derivation(rt: Runtime, cube_id: str, monkeypatch: pytest.MonkeyPatch
                          ) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """Derivation of ``cube_id``'s adds stops after reading them (entered) until released."""
    entered, release = asyncio.Event(), asyncio.Event()
    derive = rt.deriver.derive_many

    async def held(events: Sequence[Any], **kwargs: Any) -> Any:
        if any(e.cube_id == cube_id for e in events):
            entered.set()
            await release.wait()
        return await derive(events, **kwargs)

    monkeypatch.setattr(rt.deriver, "derive_many", held)
    try:
        yield entered, release
    finally:
        release.set()


async def until_closed(guard: CubeGuard, cube_id: str) -> None:
    while True:  # yields to the forget's task until it has closed the cube (no timed sleep)
        try:
            guard.check([cube_id])
        except CubeBusy:
            return
        await asyncio.sleep(0)


async def derived_everything(rt: Runtime) -> None:
    ends = await rt.log.end_offsets(CONVERSATIONS)
    for stage in ("deriver", "refiner"):
        await rt.wait_for(stage, {(CONVERSATIONS, p): end for p, end in ends.items() if end}, timeout_s=60)
    await rt.settle([])


async def test_forget_waits_for_the_cubes_add_in_derivation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("alice", ["diary"], [{"role": "user", "content": "Hello."}], mode="fast")
        async with held_derivation(rt, "diary", monkeypatch) as (entered, release):
            await service.add("alice", ["diary"], SECRET, mode="fast", async_mode="async")
            await asyncio.wait_for(entered.wait(), 60)  # the add is read and being derived
            forget = asyncio.create_task(service.forget_cube("diary", requested_by="alice"))
            await until_closed(service.cube_guard, "diary")
            with pytest.raises(CubeBusy, match="being forgotten"):  # no write starts while it is forgotten
                await service.add("alice", ["diary"], [{"role": "user", "content": "One more."}], mode="fast")
            with pytest.raises(CubeBusy):
                await service.create_cube("diary", owner_id="bob")
            assert not forget.done()  # it waits for the add being derived
            release.set()
            await asyncio.wait_for(forget, 60)
        await derived_everything(rt)

        key = b"diary"
        partition = partition_for(key, await rt.log.partitions(MEMORIES))
        end = (await rt.log.end_offsets(MEMORIES)).get(partition, 0)
        left = [r for r in await rt.log.read(MEMORIES, partition, 0, limit=max(end, 1)) if r.key == key]
        assert left == []  # the log keeps nothing of the cube
        assert await rt.graph.list_memories("diary", include_retired=True) == []

        await service.add("bob", ["diary"], [{"role": "user", "content": "I like tea."}], mode="fast")  # the id is free
        found = await service.search("bob", ["diary"], "bank PIN locker code")
        texts = [m["memory"] for bucket in found["text_mem"] for m in bucket["memories"]]
        assert texts and not any("4921" in t for t in texts)
        assert all(m["memory"] != SECRET[0]["content"] for m in await service.get_all("bob", "diary"))


async def test_forget_refuses_and_changes_nothing_when_derivation_does_not_catch_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt, limits=DoorLimits(forget_wait_s=0.3))
        await service.add("alice", ["diary"], [{"role": "user", "content": "My cat is called Miso."}], mode="fast")
        async with held_derivation(rt, "diary", monkeypatch) as (entered, release):
            await service.add("alice", ["diary"], SECRET, mode="fast", async_mode="async")
            await asyncio.wait_for(entered.wait(), 60)
            with pytest.raises(CubeBusy, match="nothing was forgotten") as refused:
                await service.forget_cube("diary", requested_by="alice")
            assert "'deriver'" in str(refused.value)  # names the stage behind
            assert await service.cube_exists("diary")
            assert [m["memory"] for m in await service.get_all("alice", "diary")]  # the memories are all there
            await service.add("alice", ["diary"], [{"role": "user", "content": "Miso is grey."}], mode="fast",
                              async_mode="async")  # writes are accepted again
            release.set()
        await derived_everything(rt)
        await service.forget_cube("diary", requested_by="alice")
        assert not await service.cube_exists("diary")


async def test_a_forget_waits_for_writes_between_their_check_and_the_log() -> None:
    guard = CubeGuard()
    order: list[str] = []
    writing = guard.writing(["c1", "c2"])
    await writing.__aenter__()

    async def forget() -> None:
        async with guard.closed(["c2"]):
            order.append("forget")

    task = asyncio.create_task(forget())
    await until_closed(guard, "c2")
    with pytest.raises(CubeBusy):
        guard.check(["c2"])
    guard.check(["c1"])  # other cubes stay open
    assert guard.writes_under_way("c2") == 1 and not task.done()
    order.append("written")
    await writing.__aexit__(None, None, None)
    await task
    assert order == ["written", "forget"]
    guard.check(["c2"])  # open again


async def test_forget_waits_for_what_the_cubes_tasks_publish(tmp_path: Path) -> None:
    """A 'query' task publishes a follow-up task for the cube while the forget waits for the first one: the
    forget waits for that too, so neither the log nor the task list keeps anything of the cube."""
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("alice", ["diary"], [{"role": "user", "content": "I like green tea."}], mode="fast")
        await service.submit_tasks([{"user_id": "alice", "cube_id": "diary", "label": "query",
                                     "content": f"private question {n}"} for n in range(20)])  # fmt: skip
        await service.forget_cube("diary", requested_by="alice")
        ends = await rt.log.end_offsets(TASKS)
        await rt.wait_for("scheduler", {(TASKS, p): end for p, end in ends.items() if end}, timeout_s=60)
        await derived_everything(rt)
        for topic in (TASKS, MEMORIES, CONVERSATIONS):
            partition = partition_for(b"diary", await rt.log.partitions(topic))
            end = (await rt.log.end_offsets(topic)).get(partition, 0)
            assert [r for r in await rt.log.read(topic, partition, 0, limit=max(end, 1)) if r.key == b"diary"] == []
        assert await rt.control.tasks(cube_id="diary") == []  # the next owner of the id would see them
