"""One user's adds and tasks waiting for derivation are bounded (door.max_pending_per_user); others still write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memos.application.errors import status_of
from memos.application.pending import UserBacklogFull
from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import AppSettings, DoorSettings
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
            task = asyncio.create_task(service.submit_tasks([{"user_id": "mallory", "cube_id": "flood",
                                                              "label": "query", "content": "where is parcel 1?"}]))
            done, _ = await asyncio.wait({local_add, task}, timeout=0.5)
            assert not done  # both wait for room while derivation is held
            # another user's adds are not counted against mallory's bound
            added = await service.add("alice", ["diary"], _msg(10), mode="fast", async_mode="async")
            assert added[0]["status"] == "waiting"
            release.set()
            assert (await asyncio.wait_for(local_add, 60))[0]["status"] == "waiting"
            assert len(await asyncio.wait_for(task, 60)) == 1
        await derived_everything(rt)
        # derivation passed mallory's records: she may add again, as many as the bound
        for n in range(11, 15):
            await service.add("mallory", ["flood"], _msg(n), mode="fast", async_mode="async")
        assert service.pending.count("mallory") <= 4
        assert service.pending.count("alice") == 0  # every reading sweeps all users' passed records


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
