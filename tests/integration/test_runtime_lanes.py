"""The runtime's lanes: stages' blocking work runs on the niced background threads, search never waits for them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.pipeline.lanes import install_lanes
from streams.settings import AppSettings

TURNS = [
    {"role": "user", "content": "I adopted a border collie named Pixel last spring."},
    {"role": "user", "content": "We hike in the Sintra hills every Saturday morning."},
]


def _background_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("memos-background")}


async def test_stage_work_runs_in_the_background_lane_and_search_is_served_past_it(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.add("ann", ["ann"], TURNS, mode="fast")  # sync: derived and projected
        assert _background_threads(), "derivation/projection made no blocking call on the background lane"
        assert (await service.search("ann", ["ann"], "dog hiking"))["text_mem"][0]["memories"]

        executor = install_lanes(asyncio.get_running_loop())  # the runtime's (once per loop)
        release = threading.Event()
        workers = executor.background._max_workers
        stuck = [executor.background.submit(release.wait, 60) for _ in range(workers)]
        try:
            found = await asyncio.wait_for(service.search("ann", ["ann"], "Pixel border collie"), timeout=30)
            assert found["text_mem"][0]["memories"]
            assert not any(f.done() for f in stuck)  # the background lane was full the whole time
        finally:
            release.set()
