"""A record that kills its worker is recognised on restart and dead-lettered; the stage goes on.

A real runner in a real process (``_log_worker poison``) over a real embedded log SIGKILLs itself on one
task; a supervisor (this test) restarts it each time it dies, as systemd would. The attempt count kept
beside the group's offsets lets the runner find the record and, after ``max_attempts`` (3) deaths on it,
dead-letter it with the reason; every other task is completed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from schemas.codec import decode
from schemas.events import TaskStatusChanged, TaskSubmitted
from schemas.topics import DLQ, TASKS
from streams.log.local.log import LocalEventLog
from streams.pipeline.delivery import event_record
from tests.integration import _log_worker

_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["tests.integration._log_worker"])
GROUP = "poison-test"
TASKS_N = 40
POISON_AT = 13


def _task(n: int) -> TaskSubmitted:
    content = _log_worker.POISON if n == POISON_AT else f"task {n}"
    return TaskSubmitted(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="cube_p", producer="test",
                         task_id=f"t{n:03d}", user_id="ann", cube_id="cube_p", label="query", content=content)


async def _read_all(db: Path, topic: str) -> list:
    async with LocalEventLog(db, partitions=2) as log:
        out = []
        for partition in range(await log.partitions(topic)):
            out += await log.read(topic, partition, 0, limit=10_000)
        return out


def _statuses(db: Path) -> dict[str, str]:
    records = asyncio.run(_read_all(db, TASKS))
    return {e.task_id: e.status for e in (decode(r.value) for r in records) if isinstance(e, TaskStatusChanged)}


def _state(db: Path) -> tuple[set[str], list]:
    done = {task for task, status in _statuses(db).items() if status != "failed"}
    return done, asyncio.run(_read_all(db, DLQ))


def test_a_record_that_kills_the_worker_is_dead_lettered_and_the_rest_processed(tmp_path: Path) -> None:
    db = tmp_path / "log.db"

    async def seed() -> None:
        async with LocalEventLog(db, partitions=2) as log:
            for topic in (TASKS, DLQ):
                await log.create_topic(topic, partitions=2)
            await log.append_batch([event_record(_task(n)) for n in range(TASKS_N)])

    asyncio.run(seed())
    expected = {f"t{n:03d}" for n in range(TASKS_N) if n != POISON_AT}
    deaths = 0
    deadline = time.monotonic() + 120
    worker = _FORKSERVER.Process(target=_log_worker.run, args=(str(tmp_path / "w.out"), ["poison", str(db), GROUP]))
    worker.start()
    try:
        while True:
            assert time.monotonic() < deadline, f"not recovered in time (deaths={deaths})"
            worker.join(timeout=0.2)  # wait on the process itself, or poll the log's state below
            if worker.exitcode is not None:
                assert worker.exitcode == -9, f"worker ended with {worker.exitcode}, not SIGKILL"
                deaths += 1
                assert deaths <= 5, "the worker keeps dying on the same record"
                worker = _FORKSERVER.Process(target=_log_worker.run,
                                             args=(str(tmp_path / "w.out"), ["poison", str(db), GROUP]))
                worker.start()
                continue
            done, dead = _state(db)
            if dead and expected <= done:
                break
    finally:
        if worker.is_alive():
            worker.terminate()
            worker.join(timeout=30)
    assert 3 <= deaths <= 4  # max_attempts deaths on the record itself (+1 when it first died in a batch)
    done, dead = _state(db)
    assert done == expected
    [letter] = dead
    poisoned = decode(letter.value)
    assert isinstance(poisoned, TaskSubmitted) and poisoned.task_id == f"t{POISON_AT:03d}"
    assert letter.header("memos.group") == GROUP.encode()
    assert letter.header("memos.error_type") == b"ProcessingError"
    assert b"when the worker died, 3 times" in (letter.header("memos.error") or b"")
    assert _statuses(db)[f"t{POISON_AT:03d}"] == "failed"  # its task says so, not "waiting" for ever
