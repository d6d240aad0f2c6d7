"""One user's adds waiting for derivation are bounded (door.max_pending_per_user); others still write; tasks are not counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from memos.application.errors import status_of
from memos.application.pending import UserBacklogFull
from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import AppSettings, DoorSettings, LogSettings
from tests.integration.test_forget_in_flight import derived_everything, held_derivation


def _msg(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Parcel number {n} went to the depot."}]


async def test_a_users_waiting_adds_are_bounded_and_others_still_add(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = AppSettings(home=tmp_path, door=DoorSettings(max_pending_per_user=4))
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        service.pending.refresh_s = 0.0  # every check reads the stages' offsets afresh (no stale count in the test)
        async with held_derivation(rt, "flood", monkeypatch) as (entered, release):
            await service.add("mallory", ["flood"], _msg(0), mode="fast", async_mode="async")
            await asyncio.wait_for(entered.wait(), 60)  # derivation holds mallory's first add
            # concurrent adds cannot all pass one count: 3 more fit, the rest are refused
            results = await asyncio.gather(*(
                service.add("mallory", ["flood"], _msg(n), mode="fast", async_mode="async") for n in range(1, 9)),
                return_exceptions=True)
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(refused) == 5 and all(isinstance(r, UserBacklogFull) for r in refused)
            assert status_of(refused[0]) == 429 and refused[0].retry_after == settings.door.backlog_retry_after_s
            assert "max_pending_per_user" in str(refused[0]) and "'mallory'" in str(refused[0])
            with pytest.raises(UserBacklogFull):  # one add naming two cubes is two records
                await service.add("mallory", ["other"], _msg(9), mode="fast", async_mode="async")
            # in-process callers are held back instead of refused, until derivation makes room
            local_add = asyncio.create_task(service.add("mallory", ["flood"], _msg(11), mode="fast",
                                                        async_mode="async", origin="local"))
            done, _ = await asyncio.wait({local_add}, timeout=0.5)
            assert not done  # it waits for room while derivation is held
            # tasks are not counted (in-process code submits them; a handler's follow-ups must not wait)
            task = await service.submit_tasks([{"user_id": "mallory", "cube_id": "flood", "label": "query",
                                                "content": "where is parcel 1?"}])
            assert len(task) == 1
            # another user's adds are not counted against mallory's bound
            added = await service.add("alice", ["diary"], _msg(10), mode="fast", async_mode="async")
            assert added[0]["status"] == "waiting"
            release.set()
            assert (await asyncio.wait_for(local_add, 60))[0]["status"] == "waiting"
        await derived_everything(rt)
        # derivation passed mallory's records: she may add again, as many as the bound
        for n in range(11, 15):
            await service.add("mallory", ["flood"], _msg(n), mode="fast", async_mode="async")
        assert service.pending.count("mallory") <= 4
        assert service.pending.count("alice") == 0  # every reading sweeps all users' passed records


async def test_a_users_waiting_bytes_are_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adds of 60 KB cost derivation 60 times what adds of 1 KB do: a count alone let one user queue minutes of
    work ahead of every other cube of the partition (found by a probe: 143 s for another tenant's sync add)."""
    settings = AppSettings(home=tmp_path, door=DoorSettings(max_pending_per_user=100, max_pending_bytes_per_user=2000))
    big = [{"role": "user", "content": "x" * 900}]
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        service.pending.refresh_s = 0.0
        async with held_derivation(rt, "flood", monkeypatch) as (entered, release):
            await service.add("mallory", ["flood"], big, mode="fast", async_mode="async")
            await asyncio.wait_for(entered.wait(), 60)
            await service.add("mallory", ["flood"], big, mode="fast", async_mode="async")  # 2 x ~930 bytes fit
            with pytest.raises(UserBacklogFull) as refused:
                await service.add("mallory", ["flood"], big, mode="fast", async_mode="async")
            assert "max_pending_bytes_per_user" in str(refused.value) and status_of(refused.value) == 429
            assert service.pending.count("mallory") == 2 and 1800 < service.pending.held_bytes("mallory") <= 2000
            added = await service.add("alice", ["diary"], big, mode="fast", async_mode="async")  # not hers
            assert added[0]["status"] == "waiting"
            release.set()
        await derived_everything(rt)
        await service.add("mallory", ["flood"], [{"role": "user", "content": "y" * 5000}], mode="fast",
                          async_mode="async")  # larger than the bound, nothing waiting: admitted, never refused for good


async def test_no_bound_when_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Runtime(AppSettings(home=tmp_path, door=DoorSettings(max_pending_per_user=0))) as rt:
        service = MemoryService(rt)
        async with held_derivation(rt, "flood", monkeypatch) as (entered, release):
            await service.add("mallory", ["flood"], _msg(0), mode="fast", async_mode="async")
            await asyncio.wait_for(entered.wait(), 60)
            for n in range(1, 7):  # all recorded while the first is held
                added = await service.add("mallory", ["flood"], _msg(n), mode="fast", async_mode="async")
                assert added[0]["status"] == "waiting"
            release.set()
        await derived_everything(rt)


async def test_a_task_handler_submitting_follow_ups_is_not_held_by_the_bound(tmp_path: Path) -> None:
    """The scheduler's query handler submits a follow-up task for the same user: counted, it would wait for the
    stage that runs the handler (found by a probe: the stage stalled door.sync_timeout_s, for every user)."""
    settings = AppSettings(home=tmp_path, door=DoorSettings(max_pending_per_user=2, sync_timeout_s=30),
                           log=LogSettings(partitions=1))
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        updated: list[str] = []

        async def query(tasks: Sequence[Any]) -> dict[str, Any]:
            ids = await service.submit_tasks([{"user_id": t.user_id, "cube_id": t.cube_id, "label": "update",
                                               "content": t.content} for t in tasks])
            return {"follow_up": ids}

        async def update(tasks: Sequence[Any]) -> dict[str, Any]:
            updated.extend(t.content for t in tasks)
            return {}

        service.register_task_handler("query", query)
        service.register_task_handler("update", update)
        ids = await service.submit_tasks([{"user_id": "mallory", "cube_id": "m", "label": "query", "content": f"q{n}"}
                                          for n in range(4)])
        for task_id in ids:
            waited = await service.wait_tasks("mallory", task_id=task_id, timeout_s=25)
            assert waited.done and not waited.timed_out
            assert [t.status for t in waited.tasks] == ["completed"], waited.tasks
        follow_ups = [f for task_id in ids for f in (await rt.control.task(task_id)).result["follow_up"]]  # type: ignore[union-attr]
        for task_id in follow_ups:
            assert (await service.wait_tasks("mallory", task_id=task_id, timeout_s=25)).done
        assert sorted(updated) == ["q0", "q1", "q2", "q3"]
