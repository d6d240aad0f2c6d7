"""Exactly-once derivation on Kafka: derived events and the input offsets commit in one transaction.

The real first derivation stage runs in a worker process (``_kafka_worker derive``) and is SIGKILLed
inside its transaction (events sent, offsets not) or right after the transaction committed. Either way,
once a worker finished the record, read_committed readers see its derived events exactly once, and a
record whose transaction committed is never derived again (the model does not re-run).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos.runtime import Runtime
from schemas.codec import decode
from schemas.envelope import Position
from schemas.events import ConversationRecorded, Event, MemoryAdded, TaskStatusChanged
from schemas.topics import CONVERSATIONS, MEMORIES, TASKS
from streams.settings import AppSettings, LogSettings
from tests.engines import engine_url
from tests.integration import _kafka_worker
from tests.integration._kafka_worker import PARTITIONS

pytestmark = pytest.mark.engine("kafka")

_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["tests.integration._kafka_worker"])
MESSAGES = [
    {"role": "user", "content": "I adopted a border collie named Pixel last spring."},
    {"role": "user", "content": "We hike in the Sintra hills every Saturday morning."},
]


class Deriving:
    """A ``_kafka_worker derive`` process writing its lines to a file."""

    def __init__(self, tmp: Path, url: str, group: str, crash: str, n: int) -> None:
        self.out = tmp / f"derive-{n}.out"
        self.proc = _FORKSERVER.Process(target=_kafka_worker.run,
                                        args=(str(self.out), ["derive", url, str(tmp / "home"), group, crash]))
        self.proc.start()

    def lines(self) -> list[str]:
        return self.out.read_text().split("\n")[:-1] if self.out.exists() else []

    def died(self, timeout_s: float = 120.0) -> list[str]:
        self.proc.join(timeout=timeout_s)
        assert self.proc.exitcode == -signal.SIGKILL, f"exit {self.proc.exitcode}: {self.lines()[-5:]}"
        return self.lines()

    def stop(self) -> list[str]:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=30)
        return self.lines()


async def _evict_members(servers: str, group: str) -> None:
    """Remove the killed worker from its group. A Kafka broker expires it after ``session.timeout.ms``;
    noida-db keeps a killed member and even elects it leader of the next rebalance, so the group would
    never settle. The killed worker is the group's only member (this test's own group)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.group import LeaveGroupRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        [described] = (await admin.describe_consumer_groups([group]))[0].groups
        coordinator = await admin.find_coordinator(group)
        for member in described[5]:
            await admin._client.send(coordinator, LeaveGroupRequest(group, member[0]))
    finally:
        await admin.close()


def _model_runs(lines: list[str], task_id: str) -> int:
    """How often the worker ran the model on a task (other tests' records may share its batches)."""
    return sum(task_id in line.removeprefix("derive ").split(",") for line in lines if line.startswith("derive "))


def _ev(cls: type[Event], key: str, **fields: object) -> Event:
    return cls(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key=key, producer="test", **fields)


async def _for_task(rt: Runtime, cube: str, task_id: str) -> tuple[list[MemoryAdded], list[TaskStatusChanged]]:
    """Committed memory events of the cube and the task's statuses, as a read_committed reader sees them."""
    added: list[MemoryAdded] = []
    statuses: list[TaskStatusChanged] = []
    for topic in (MEMORIES, TASKS):
        for partition in range(await rt.log.partitions(topic)):
            for record in await rt.log.read(topic, partition, 0, limit=100_000):
                if record.key != cube.encode():
                    continue
                event = decode(record.value)
                if isinstance(event, MemoryAdded):
                    added.append(event)
                elif isinstance(event, TaskStatusChanged) and event.task_id == task_id:
                    statuses.append(event)
    return added, statuses


async def _wait_committed(rt: Runtime, group: str, position: Position, timeout_s: float = 120.0) -> None:
    await rt.wait_for(group, {(CONVERSATIONS, position.partition): position.offset + 1}, timeout_s=timeout_s)


@pytest.mark.parametrize("crash", ["before_commit", "after_commit"])
async def test_a_crash_around_the_commit_neither_reruns_the_model_nor_writes_twice(
        tmp_path: Path, unique: str, crash: str) -> None:
    url = engine_url("kafka")
    settings = AppSettings(home=tmp_path / "home", log=LogSettings(url=url, partitions=PARTITIONS))
    cube = f"cube-eos-{unique}"
    group = f"deriver-eos-{unique}"
    async with Runtime(settings, run_stages=False) as rt:
        # a new derivation group, starting at the end of the shared topic: it only sees this test's records
        ends = await rt.log.end_offsets(CONVERSATIONS)
        consumer = rt.log.consumer([CONVERSATIONS], group_id=group)
        try:
            deadline = time.monotonic() + 30
            while consumer.assignment() != {(CONVERSATIONS, p) for p in ends}:
                assert time.monotonic() < deadline, "never got every conversations partition"
                await consumer.poll(timeout_s=0.2)
            await consumer.commit({(CONVERSATIONS, p): o for p, o in ends.items()})
        finally:
            await consumer.aclose()
        first = f"t1-{unique}"
        [recorded] = await rt.publish([_ev(ConversationRecorded, cube, user_id="ann", cube_id=cube,
                                           messages=MESSAGES, mode="fast", task_id=first)])

        crashing = Deriving(tmp_path, url, group, crash, 1)
        lines = crashing.died()
        await _evict_members(url.removeprefix("kafka://"), group)
        assert f"crash {crash}" in lines and _model_runs(lines, first) == 1
        added, statuses = await _for_task(rt, cube, first)
        if crash == "before_commit":  # the open transaction is aborted: nothing derived is visible
            assert added == [] and statuses == []
            assert (await rt.log.committed(group, CONVERSATIONS)).get(recorded.partition, 0) <= recorded.offset
        else:  # committed together: the output and the offsets
            deadline = time.monotonic() + 20  # the broker writes the commit markers after the worker's last call
            while not (added and statuses) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # polling the committed output, not standing in for a wait
                added, statuses = await _for_task(rt, cube, first)
            assert added and [e.status for e in statuses] == ["completed"]
            await _wait_committed(rt, group, recorded, timeout_s=5)

        second = f"t2-{unique}"
        worker = Deriving(tmp_path, url, group, "none", 2)
        try:
            [later] = await rt.publish([_ev(ConversationRecorded, cube, user_id="ann", cube_id=cube,
                                            messages=[{"role": "user", "content": "Pixel turned two."}],
                                            mode="fast", task_id=second)])
            await _wait_committed(rt, group, later)
        finally:
            lines = worker.stop()
        assert _model_runs(lines, first) == (1 if crash == "before_commit" else 0)
        assert _model_runs(lines, second) == 1
        added, statuses = await _for_task(rt, cube, first)
        ids = [e.memory_id for e in added]
        assert len(ids) == len(set(ids)), "a derived memory was written twice"
        [done] = statuses
        assert done.status == "completed" and done.result["memory_ids"]
        assert set(done.result["memory_ids"]) <= set(ids)
