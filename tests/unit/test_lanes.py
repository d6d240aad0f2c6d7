"""Background lane: its blocking calls run on niced threads of their own; serving calls never queue behind them."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from streams.pipeline.lanes import LaneExecutor, background_context, in_background, install_lanes


def _where() -> tuple[str, int]:
    return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_each_lane_runs_on_its_own_threads_and_background_is_niced() -> None:
    executor = install_lanes(asyncio.get_running_loop(), niceness=5)
    assert install_lanes(asyncio.get_running_loop()) is executor  # once per loop
    serving_name, serving_nice = await asyncio.to_thread(_where)

    async def background() -> tuple[str, int]:
        assert in_background()
        return await asyncio.to_thread(_where)

    name, nice = await asyncio.create_task(background(), context=background_context())
    assert not in_background()
    assert serving_name.startswith("asyncio") and name.startswith("memos-background")
    assert nice == min(19, serving_nice + 5)


async def test_a_serving_call_does_not_wait_for_a_saturated_background_pool() -> None:
    loop = asyncio.get_running_loop()
    executor = LaneExecutor(max_workers=2, background_workers=2)
    loop.set_default_executor(executor)
    release = threading.Event()

    async def blocked() -> bool:
        return await asyncio.to_thread(release.wait, 30)

    stuck = [asyncio.create_task(blocked(), context=background_context()) for _ in range(6)]
    try:
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "served"), timeout=10) == "served"
        assert not any(task.done() for task in stuck)
    finally:
        release.set()
        assert all(await asyncio.gather(*stuck))


@pytest.mark.parametrize("niceness", [0, 3])
def test_a_new_background_thread_lowers_only_itself(niceness: int) -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    executor = LaneExecutor(background_workers=1, niceness=niceness)
    try:
        _, nice = executor.background.submit(_where).result(timeout=10)
    finally:
        executor.shutdown()
    assert nice == min(19, before + niceness)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
