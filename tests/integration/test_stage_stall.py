"""A stage that hangs raises nothing, so the runner watches it: with batches in flight and none finished for
``stall_after_s`` it stops with StageStalled, committing nothing; restarted, it takes the batch record by record,
and a record that hangs at every try is dead-lettered after ``max_attempts`` like one that kills the process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.envelope import Envelope
from schemas.errors import StageStalled
from schemas.events import AnyEvent, Event, TaskSubmitted
from schemas.topics import DLQ, TASKS
from streams.log.base import OutgoingRecord
from streams.log.local.log import LocalEventLog
from streams.pipeline.runner import Runner, Stage, event_record

GROUP = "stall-test"


class Hanging(Stage):
    """Records each task it handles; the task named ``hangs`` never finishes."""

    name = GROUP
    topics = (TASKS,)

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        for envelope in batch:
            event = envelope.event
            if isinstance(event, TaskSubmitted):
                if event.task_id == "hangs":
                    await asyncio.Event().wait()  # a hang: no error, no progress
                self.handled.append(event.task_id)
        return []


def _task(task_id: str) -> OutgoingRecord:
    return event_record(TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c",
                                      task_id=task_id, user_id="u", cube_id="c", label="query"))


async def test_a_hanging_record_stops_the_stage_then_is_dead_lettered_after_its_tries(tmp_path: Path) -> None:
    async with LocalEventLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        await log.append_batch([_task("before"), _task("hangs"), _task("after")])
        stalls = 0
        while True:  # a worker's supervisor: restart the stage after each stall
            stage = Hanging()
            runner = Runner(log, stage, max_batch=10, poll_timeout_s=0.05, max_attempts=3, stall_after_s=0.3)
            running = asyncio.create_task(runner.run())
            while not running.done() and (await log.committed(GROUP, TASKS)).get(0, 0) < 3:
                await asyncio.sleep(0.02)  # polling the run and the committed offset, not waiting for time
            if not running.done():
                break
            with pytest.raises(ExceptionGroup) as raised:
                running.result()
            assert raised.group_contains(StageStalled), raised.value
            stalls += 1
            assert (await log.committed(GROUP, TASKS)).get(0, 0) == (0 if stalls == 1 else 1)  # never past it
            assert stalls < 10
        # the first try took the batch (counted at its first record), the next ones the hanging record alone:
        # in flight at 4 stops, past max_attempts=3
        assert stalls == 4
        runner.stop()
        await asyncio.wait_for(running, 30)
        assert stage.handled == ["after"] and runner.dead_lettered == 1
        [dead] = await log.read(DLQ, 0, 0, limit=10)
        assert b"hangs" in dead.value


async def test_a_quiet_stage_is_not_stalled(tmp_path: Path) -> None:
    async with LocalEventLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        stage = Hanging()
        runner = Runner(log, stage, max_batch=10, poll_timeout_s=0.05, stall_after_s=0.1)
        running = asyncio.create_task(runner.run())
        try:
            for n in range(3):  # nothing in flight between the adds, however long that lasts
                await log.append_batch([_task(f"t{n}")])
                while f"t{n}" not in stage.handled:
                    assert not running.done(), running
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # the scenario itself: a quiet spell longer than stall_after_s
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
        assert stage.handled == ["t0", "t1", "t2"]


async def test_the_faust_host_stops_on_a_record_that_hangs(tmp_path: Path) -> None:
    from memos.runtime import Runtime
    from streams.pipeline.faust_app import StageHost
    from streams.settings import AppSettings

    settings = AppSettings(home=tmp_path)
    settings.derivation.stall_after_s = 0.2
    async with Runtime(settings, run_stages=False) as rt:
        host = StageHost(settings, lambda: rt)
        stage = Hanging()
        host.runtime, host.stages = rt, {GROUP: stage}
        [at] = await rt.log.append_batch([_task("hangs")])
        [record] = await rt.log.read(TASKS, at.partition, at.offset, limit=1)
        with pytest.raises(StageStalled, match="stall_after_s"):
            await asyncio.wait_for(host.process(GROUP, record), 30)
        assert host.processed == 0 and host.dead_lettered == 0  # not acked: the restarted worker tries it again


async def test_a_long_batch_that_says_it_is_still_working_is_not_stalled(tmp_path: Path) -> None:
    from streams.pipeline.runner import still_working

    class Slow(Hanging):
        async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
            for _ in range(8):  # the scenario: 0.8 s of work in steps, past stall_after_s
                still_working()
                await asyncio.sleep(0.1)
            return await super().handle(batch)

    async with LocalEventLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        await log.append_batch([_task("slow")])
        stage = Slow()
        runner = Runner(log, stage, max_batch=10, poll_timeout_s=0.05, stall_after_s=0.3)
        running = asyncio.create_task(runner.run())
        try:
            while (await log.committed(GROUP, TASKS)).get(0, 0) < 1:
                assert not running.done(), running
                await asyncio.sleep(0.02)
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
        assert stage.handled == ["slow"]
