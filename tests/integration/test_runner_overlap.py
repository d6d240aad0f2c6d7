"""Overlapped batches (``Stage.overlap``): a slow key holds back neither another key's output nor its order,
and no offset is committed past a batch that is not done."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from schemas.codec import decode
from schemas.envelope import Envelope, Position, Record
from schemas.errors import StoreUnavailable
from schemas.events import AnyEvent, Event, TaskStatusChanged, TaskSubmitted, derive_id
from schemas.topics import DLQ, TASKS
from streams.log.base import OutgoingRecord, record_size
from streams.log.local.log import LocalEventLog
from streams.pipeline.runner import Runner, Stage, event_record

GROUP = "overlap-test"


class WatchedLog(LocalEventLog):
    """Tells when a task's status was appended."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.appended: dict[str, asyncio.Event] = {}

    async def append_batch(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        positions = await super().append_batch(records)
        for record in records:
            if b"TaskStatusChanged" in bytes(record.value):
                event = decode(bytes(record.value))  # the task id read, not searched for in the bytes: "a2" can
                done = self.appended.get(getattr(event, "task_id", ""))  # occur in another task's uuid bytes
                if done is not None:
                    done.set()
        return positions


class Gated(Stage):
    """Completes each submitted task; a cube's tasks wait while its gate is closed."""

    name = GROUP
    topics = (TASKS,)
    overlap = 3

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.handled: list[str] = []

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        out: list[Event] = []
        for envelope in batch:
            event = envelope.event
            if not isinstance(event, TaskSubmitted):
                continue
            self.started.append(event.task_id)
            gate = self.gates.get(event.cube_id)
            if gate is not None:
                await gate.wait()
            self.handled.append(event.task_id)
            out.append(TaskStatusChanged(event_id=derive_id(event.event_id, "done"), occurred_at=event.occurred_at,
                                         key=event.key, producer=GROUP, task_id=event.task_id, cube_id=event.cube_id,
                                         status="completed", label=event.label))
        return out


def _task(task_id: str, cube: str) -> OutgoingRecord:
    return event_record(TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube,
                                      task_id=task_id, user_id="u", cube_id=cube, label="query"))


async def test_a_slow_key_holds_back_neither_another_keys_output_nor_its_own_order(tmp_path: Path) -> None:
    async with WatchedLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        stage = Gated()
        stage.gates["a"] = asyncio.Event()
        log.appended = {t: asyncio.Event() for t in ("a1", "b1", "a2")}
        for task_id, cube in (("a1", "a"), ("b1", "b"), ("a2", "a")):
            await log.append_batch([_task(task_id, cube)])  # one record per batch (max_batch=1)
        runner = Runner(log, stage, max_batch=1, poll_timeout_s=0.05)
        running = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(log.appended["b1"].wait(), 30)  # b's output is on the log while a1 waits
            assert stage.handled == ["b1"] and stage.started == ["a1", "b1"]  # a2 waits for a1: same key
            assert (await log.committed(GROUP, TASKS)).get(0, 0) == 0  # nothing committed past a1, not done
            stage.gates["a"].set()
            await asyncio.wait_for(log.appended["a2"].wait(), 30)
            assert stage.handled == ["b1", "a1", "a2"]
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
        assert (await log.committed(GROUP, TASKS)).get(0, 0) >= 3  # every batch committed once done


async def test_a_failing_overlapped_batch_stops_the_runner_without_committing_past_it(tmp_path: Path) -> None:
    class Failing(Gated):
        async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
            if any(isinstance(e.event, TaskSubmitted) and e.event.task_id == "x1" for e in batch):
                raise StoreUnavailable("the engine went away")  # retried, then the runner stops
            return await super().handle(batch)

    async with WatchedLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        stage = Failing()
        stage.gates["x"] = asyncio.Event()
        for task_id, cube in (("x0", "x"), ("x1", "y"), ("x2", "z")):
            await log.append_batch([_task(task_id, cube)])
        runner = Runner(log, stage, max_batch=1, poll_timeout_s=0.05, max_retries=0)
        run = asyncio.create_task(runner.run())
        done, _ = await asyncio.wait({run}, timeout=30)
        if run not in done:
            run.cancel()
        assert run in done and run.exception() is not None  # x1 failed while x0 was still in flight
        assert "x0" not in stage.handled
        assert (await log.committed(GROUP, TASKS)).get(0, 0) == 0  # x0 never finished: nothing past it


class Echoing(Stage):
    """Completes each task with its content echoed twice in the status: past the log's limit for long ones."""

    name = GROUP
    topics = (TASKS,)

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        return [TaskStatusChanged(event_id=derive_id(e.event.event_id, "done"), occurred_at=e.event.occurred_at,
                                  key=e.event.key, producer=GROUP, task_id=e.event.task_id, cube_id=e.event.cube_id,
                                  status="completed", label=e.event.label, result={"echo": e.event.content * 2})
                for e in batch if isinstance(e.event, TaskSubmitted)]


async def test_an_output_over_the_record_limit_dead_letters_its_input_and_the_stage_goes_on(tmp_path: Path) -> None:
    async with WatchedLog(tmp_path / "log.db", partitions=1, max_record_bytes=4096) as log:
        await log.create_topic(TASKS, partitions=1)
        log.appended = {"after": asyncio.Event()}
        def task(content: str) -> TaskSubmitted:
            return TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", task_id="big",
                                 user_id="u", cube_id="c", label="query", content=content)

        big = task("x" * (4096 - record_size(event_record(task(""))) - 40))  # fits, just; its echo does not,
        # nor its DLQ copy with the error's headers
        await log.append_batch([_task("before", "c"), event_record(big), _task("after", "c")])
        runner = Runner(log, Echoing(), max_batch=10, poll_timeout_s=0.05)
        running = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(log.appended["after"].wait(), 30)  # the stage went past the big one
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
        assert runner.dead_lettered == 1
        done = [decode(r.value) for r in await log.read(TASKS, 0, 3, limit=10)]
        statuses = {e.task_id: (e.status, e.error or "") for e in done if isinstance(e, TaskStatusChanged)}
        assert {task: status for task, (status, _) in statuses.items()} == {
            "before": "completed", "after": "completed", "big": "failed"  # the big one's task says why
        }
        assert "record limit" in statuses["big"][1]
        [dead] = await log.read(DLQ, 0, 0, limit=10)
        assert dead.value == b"" and dead.header("memos.value_left_out") == str(len(event_record(big).value)).encode()
        assert b"record limit" in (dead.header("memos.error") or b"") and dead.header("memos.origin") is not None
        assert (await log.committed(GROUP, TASKS)).get(0, 0) >= 3


async def test_the_faust_host_dead_letters_an_add_whose_output_cannot_be_appended(tmp_path: Path) -> None:
    from memos.runtime import Runtime
    from streams.pipeline.faust_app import StageHost
    from streams.settings import AppSettings

    settings = AppSettings(home=tmp_path)
    async with Runtime(settings, run_stages=False) as rt:
        host = StageHost(settings, lambda: rt)
        host.runtime, host.stages = rt, {GROUP: Echoing()}
        big = TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", task_id="big",
                            user_id="u", cube_id="c", label="query", content="x" * 600_000)  # its echo: 1.2 MB
        dlq = (await rt.log.end_offsets(DLQ)).get(0, 0)
        [at] = await rt.log.append_batch([event_record(big)])
        [record] = await rt.log.read(TASKS, at.partition, at.offset, limit=1)
        await host.process(GROUP, record)
        assert host.dead_lettered == 1 and host.processed == 0
        dead = [r for p in (await rt.log.end_offsets(DLQ)) for r in await rt.log.read(DLQ, p, 0, limit=100)]
        assert len(dead) == 1 + dlq and b"record limit" in (dead[-1].header("memos.error") or b"")


class SplitByUser(Gated):
    """Gated, with each polled batch split into one part per user (in the order the users first appear)."""

    def split(self, records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
        parts: dict[str, list[Record]] = {}
        for record in records:
            event = decode(record.value)
            parts.setdefault(event.user_id if isinstance(event, TaskSubmitted) else "", []).append(record)
        return sorted(parts.items(), key=lambda p: p[0] != "x")  # x's part first, whatever the log order


async def test_a_split_batch_lands_each_users_part_when_done_and_commits_once_all_are(tmp_path: Path) -> None:
    def task(task_id: str, cube: str, user: str) -> OutgoingRecord:
        return event_record(TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=cube,
                                          task_id=task_id, user_id=user, cube_id=cube, label="query"))

    async with WatchedLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        stage = SplitByUser()
        stage.gates["a"] = asyncio.Event()
        log.appended = {t: asyncio.Event() for t in ("m1", "x1", "m2")}
        await log.append_batch([task("m1", "a", "m"), task("x1", "b", "x"), task("m2", "c", "m")])  # one poll
        runner = Runner(log, stage, max_batch=10, poll_timeout_s=0.05)
        running = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(log.appended["x1"].wait(), 30)  # x's part landed while m's waits
            assert "m1" not in stage.handled and "m2" not in stage.handled  # m's records are one part
            assert (await log.committed(GROUP, TASKS)).get(0, 0) == 0  # x's part commits nothing: m1 is not done
            stage.gates["a"].set()
            await asyncio.wait_for(log.appended["m2"].wait(), 30)
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
        assert (await log.committed(GROUP, TASKS)).get(0, 0) >= 3  # the last part committed the whole batch


async def test_a_stop_finishes_the_batches_being_handled_and_leaves_those_waiting_for_a_place(tmp_path: Path) -> None:
    class Placed(Gated):
        overlap = 2  # two places for owner "" (the default split), read four batches ahead per place
        read_ahead = 4

    async with WatchedLog(tmp_path / "log.db", partitions=1) as log:
        await log.create_topic(TASKS, partitions=1)
        stage = Placed()
        stage.gates = {"a": asyncio.Event(), "b": asyncio.Event()}
        for task_id, cube in (("a1", "a"), ("b1", "b"), ("c1", "c"), ("d1", "d")):
            await log.append_batch([_task(task_id, cube)])
        runner = Runner(log, stage, max_batch=1, poll_timeout_s=0.05)
        running = asyncio.create_task(runner.run())
        try:
            while sorted(stage.started) != ["a1", "b1"] or len(runner._flight) < 4:
                assert not running.done(), running
                await asyncio.sleep(0.01)  # polling until c1 and d1 wait for a place
        finally:
            runner.stop()
            stage.gates["a"].set()
            stage.gates["b"].set()
            await asyncio.wait_for(running, 30)  # no error: the waiting batches were left, not failed
        assert sorted(stage.handled) == ["a1", "b1"]  # c1 and d1 never ran: a stop waits for no more work
        assert (await log.committed(GROUP, TASKS)).get(0, 0) == 2  # the handled ones, nothing past them
        rerun = Placed()
        runner = Runner(log, rerun, max_batch=10, poll_timeout_s=0.05)
        running = asyncio.create_task(runner.run())
        try:
            while sorted(rerun.handled) != ["c1", "d1"]:
                assert not running.done(), running
                await asyncio.sleep(0.01)
        finally:
            runner.stop()
            await asyncio.wait_for(running, 30)
