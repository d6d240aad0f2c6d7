"""The faust-streaming worker on a real Kafka-protocol broker: same stages, DLQ for poison, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from memory_store.control import TaskInfo
from memos.application.service import MemoryService
from memos.runtime import Runtime
from schemas.envelope import Record
from schemas.topics import CONVERSATIONS, DLQ
from streams.pipeline.faust_app import STAGE_TOPICS
from streams.settings import load_settings
from tests.engines import engine_url

pytestmark = pytest.mark.engine("kafka")

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class FaustWorker:
    """``run_faust_worker`` in a child process (own consumer groups), its output in a file."""

    def __init__(self, log_path: Path, group_prefix: str) -> None:
        self.log_path = log_path
        code = (
            "from memos.runtime import Runtime\n"
            "from streams.pipeline.faust_app import run_faust_worker\n"
            "from streams.settings import load_settings\n"
            "settings = load_settings()\n"
            "run_faust_worker(settings, lambda: Runtime(settings, run_stages=False), "
            f"group_prefix={group_prefix!r})\n"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; kill (and fail) when it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"faust worker did not exit within {timeout_s}s of SIGTERM:\n{self.tail()}")


@pytest.fixture
def faust_worker(tmp_path: Path) -> Iterator[Callable[[str], FaustWorker]]:
    started: list[FaustWorker] = []

    def start(group_prefix: str) -> FaustWorker:
        worker = FaustWorker(tmp_path / f"faust-worker-{len(started)}.log", group_prefix)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)


async def until(
    check: Callable[[], Awaitable[T | None]], worker: FaustWorker, what: str, timeout_s: float = 60.0
) -> T:
    """Poll ``check`` until it returns a truthy value; fail early when the worker dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if worker.proc.poll() is not None:
            pytest.fail(f"faust worker exited ({worker.proc.returncode}) before {what}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}:\n{worker.tail()}")
        await asyncio.sleep(0.1)


async def start_groups_at_end(rt: Runtime, servers: str, group_prefix: str) -> None:
    """Commit the current end offsets for the worker's new groups, so they skip what other tests left
    on the shared topics (a new group otherwise starts at the earliest offset)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    for stage, topics in STAGE_TOPICS.items():
        ends = {
            TopicPartition(topic, partition): end
            for topic in topics
            for partition, end in (await rt.log.end_offsets(topic)).items()
        }
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers, group_id=group_prefix + stage, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.commit(ends)
        finally:
            await consumer.stop()


async def dlq_since(rt: Runtime, start: dict[int, int]) -> list[Record]:
    out: list[Record] = []
    for partition, end in (await rt.log.end_offsets(DLQ)).items():
        offset = start.get(partition, 0)
        while offset < end:
            records = await rt.log.read(DLQ, partition, offset)
            if not records:
                break
            out += records
            offset = records[-1].position.offset + 1
    return out


async def test_faust_worker_derives_projects_dead_letters_and_stops_cleanly(
    memos_home: Path, unique: str, monkeypatch: pytest.MonkeyPatch, faust_worker: Callable[[str], FaustWorker]
) -> None:
    url = engine_url("kafka")
    prefix = f"test-faust-{unique}-"
    monkeypatch.setenv("MEMOS_LOG__URL", url)
    monkeypatch.setenv("MEMOS_LOG__GROUP_PREFIX", prefix)  # this API process waits on the worker's groups
    settings = load_settings()
    assert settings.home == memos_home and settings.log_url() == url and settings.log.group_prefix == prefix
    user, cube = f"user-{unique}", f"cube-{unique}"

    async with Runtime(settings, run_stages=False) as rt:
        await start_groups_at_end(rt, url.removeprefix("kafka://"), prefix)
        worker = faust_worker(prefix)
        service = MemoryService(rt)

        async def completed(task_id: str) -> TaskInfo | None:
            info = await rt.control.task(task_id)
            return info if info is not None and info.status == "completed" else None

        # 1. A fast async add: the worker derives, projects into this home's stores, completes the task.
        [first] = await service.add(
            user,
            [cube],
            [{"role": "user", "content": "I go hiking in the Alps every summer with my sister."}],
            mode="fast",
            async_mode="async",
        )
        assert first["status"] == "waiting"
        task = await until(lambda: completed(first["task_id"]), worker, "the first add task to complete")
        ids = list(task.result["memory_ids"])
        assert ids and task.error is None
        records = await until(
            lambda: rt.graph.get(ids, cube_id=cube), worker, "the first memories in the graph"
        )
        assert {r.id for r in records} == set(ids)
        assert any("Alps" in r.memory for r in records)
        listed = await rt.graph.list_memories(cube)
        assert {r.id for r in listed} >= set(ids)

        # 2. Poison on the conversations topic goes to the DLQ (once per stage reading it) with its error;
        #    a good conversation after it is still derived and projected.
        dlq_start = await rt.log.end_offsets(DLQ)
        garbage = b"\x00\x01 not an avro event " + unique.encode()
        poison = await rt.log.append(
            CONVERSATIONS, cube.encode(), garbage, headers=[("test-run", unique.encode())]
        )
        [second] = await service.add(
            user,
            [cube],
            [{"role": "user", "content": "My favourite tea is genmaicha, brewed at 80 degrees."}],
            mode="fast",
            async_mode="async",
        )

        async def dead_copies() -> list[Record] | None:
            found = [r for r in await dlq_since(rt, dlq_start) if r.value == garbage]
            return found if len(found) >= 4 else None

        dead = await until(dead_copies, worker, "the poison record on the DLQ")
        assert {r.header("memos.group") for r in dead} == {  # each derivation phase in both lanes (small, large)
            f"{prefix}{group}".encode() for group in ("deriver", "deriver-large", "refiner", "refiner-large")
        }
        for record in dead:
            assert record.key == cube.encode()
            assert record.header("memos.error_type") == b"EventDecodeError"
            assert record.header("memos.error")
            assert record.header("memos.origin") == str(poison).encode()
            assert record.header("test-run") == unique.encode()
        task2 = await until(
            lambda: completed(second["task_id"]), worker, "the add after the poison to complete"
        )
        ids2 = list(task2.result["memory_ids"])
        assert ids2
        records2 = await until(
            lambda: rt.graph.get(ids2, cube_id=cube), worker, "the second memories in the graph"
        )
        assert any("genmaicha" in r.memory for r in records2)

        # 3. SIGTERM: a clean exit that closed the stores and committed past everything processed.
        assert worker.stop() == 0, worker.tail()
        assert "faust stage host stopped" in worker.log_path.read_text(errors="replace")
        committed = await rt.log.committed(f"{prefix}deriver", CONVERSATIONS)
        assert committed.get(poison.partition, 0) > poison.offset
