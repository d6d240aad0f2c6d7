"""One tenant's adds with files never hold another's back: while alice's add is still being derived in the large
lane, bob's sync add with a file comes back with its memories, and the lane commits nothing past alice's add."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.events import ConversationRecorded
from schemas.topics import CONVERSATIONS
from streams.settings import AppSettings
from tests.support.log_reading import adds_on_log


def _file_turn(text: str, name: str) -> list[dict[str, Any]]:
    data = base64.b64encode(text.encode()).decode()
    return [{"role": "user", "content": [{"type": "file", "file": {"filename": name,
                                                                   "file_data": f"data:text/plain;base64,{data}"}}]}]


async def test_a_sync_file_add_is_not_held_behind_another_tenants_slow_one(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        gate, started = asyncio.Event(), asyncio.Event()
        derive_many = rt.deriver.derive_many

        async def held(events: Sequence[ConversationRecorded], **kwargs: Any) -> Any:
            if any(e.cube_id == "alice_files" for e in events):  # alice's parse takes as long as the test says
                started.set()
                await gate.wait()
            return await derive_many(events, **kwargs)

        rt.deriver.derive_many = held  # type: ignore[method-assign]
        try:
            queued = await service.add("alice", ["alice_files"], _file_turn("Alice's quarterly report.", "q.txt"),
                                       mode="fast", async_mode="async")
            await asyncio.wait_for(started.wait(), 60)
            added = await asyncio.wait_for(service.add(
                "bob", ["bob_files"], _file_turn("Bob's packing list: tent, stove, two mugs.", "list.txt"), mode="fast"),
                60)
            assert not gate.is_set()
            assert any("tent" in m["memory"] for m in added[0]["memories"])  # derived, projected, returned
            found = await service.search("bob", ["bob_files"], "what is on the packing list")
            assert any("tent" in m["memory"] for m in found["text_mem"][0]["memories"])
            alice_at = [p for p in await adds_on_log(rt) if p[1] == "alice_files"][0][0]
            committed = await rt.log.committed(rt.group("deriver-large"), CONVERSATIONS)
            assert committed.get(alice_at[0], 0) <= alice_at[1]  # bob's batch is done but commits after alice's
        finally:
            gate.set()
        status = await service.wait_tasks("alice", task_id=queued[0]["task_id"], timeout_s=60)
        assert status.done

