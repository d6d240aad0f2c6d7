"""One tenant's slow text adds never hold another's back in the small lane: while alice's add is still being derived,
bob's sync add to a cube on the same log partition comes back with its memories; alice's next add to her cube waits
for her first (order per cube), and the lane commits nothing past her first add until it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.events import ConversationRecorded
from schemas.topics import CONVERSATIONS
from streams.log.base import partition_for
from streams.settings import AppSettings
from tests.support.log_reading import adds_on_log


async def test_a_sync_add_is_not_held_behind_another_tenants_slow_one_on_its_partition(tmp_path: Path) -> None:
    settings = AppSettings(home=tmp_path)
    partitions = settings.log.partitions
    assert partitions > 1
    bob_cube = next(c for c in (f"bob_{n}" for n in range(1000))
                    if partition_for(c.encode(), partitions) == partition_for(b"alice_chat", partitions))
    async with Runtime(settings) as rt:
        service = MemoryService(rt)
        gate, started = asyncio.Event(), asyncio.Event()
        calls: list[tuple[str, str]] = []
        derive_many = rt.deriver.derive_many

        async def held(events: Sequence[ConversationRecorded], **kwargs: Any) -> Any:
            texts = " ".join(str(e.messages) for e in events)
            label = "first" if "first" in texts else "second" if "second" in texts else "other"
            calls.append(("start", label))
            if label == "first":  # alice's first add takes as long as the test says
                started.set()
                await gate.wait()
            out = await derive_many(events, **kwargs)
            calls.append(("end", label))
            return out

        rt.deriver.derive_many = held  # type: ignore[method-assign]
        try:
            first = await service.add("alice", ["alice_chat"], [{"role": "user", "content": "My first note: the "
                                      "boiler is serviced in May."}], mode="fast", async_mode="async")
            await asyncio.wait_for(started.wait(), 60)
            second = await service.add("alice", ["alice_chat"], [{"role": "user", "content": "My second note: "
                                       "the roof was fixed in June."}], mode="fast", async_mode="async")
            added = await asyncio.wait_for(service.add(
                "bob", [bob_cube], [{"role": "user", "content": "I keep the spare key under the blue flowerpot."}],
                mode="fast"), 60)
            assert not gate.is_set()
            assert any("flowerpot" in m["memory"] for m in added[0]["memories"])  # derived, projected, returned
            found = await service.search("bob", [bob_cube], "where is the spare key")
            assert any("flowerpot" in m["memory"] for m in found["text_mem"][0]["memories"])
            assert ("start", "second") not in calls  # same cube: waits for the first
            first_at = [p for p in await adds_on_log(rt) if p[1] == "alice_chat"][0][0]
            committed = await rt.log.committed(rt.group("deriver"), CONVERSATIONS)
            assert committed.get(first_at[0], 0) <= first_at[1]  # bob's batch is done but commits after alice's
        finally:
            gate.set()
        for queued in (first, second):
            status = await service.wait_tasks("alice", task_id=queued[0]["task_id"], timeout_s=60)
            assert status.done
        assert calls.index(("end", "first")) < calls.index(("start", "second"))

