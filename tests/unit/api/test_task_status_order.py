"""Task status projection: a finished task stays finished whatever order the phases' events arrive in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from memory_store.control.sqlite import SQLiteControlStore
from schemas.envelope import Position
from schemas.events import TaskStatus, TaskStatusChanged
from schemas.topics import TASKS


def _status(n: int, status: TaskStatus, **extra: object) -> tuple[TaskStatusChanged, Position]:
    event = TaskStatusChanged(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), key="c", task_id="t1",
                              cube_id="c", status=status, **extra)  # type: ignore[arg-type]  # fmt: skip
    return event, Position(TASKS, 0, n)


async def test_a_late_in_progress_does_not_reopen_a_completed_task(tmp_path: Path) -> None:
    async with SQLiteControlStore(tmp_path / "control.db") as store:
        # the refiner's "completed" was appended before the first phase's "in_progress"
        applied = await store.apply([
            _status(0, "waiting"), _status(1, "completed", result={"memory_ids": ["m1"]}),
            _status(2, "in_progress", result={"memory_ids": ["fast"]}),
        ])  # fmt: skip
        assert applied == 3
        info = await store.task("t1")
        assert info is not None and info.status == "completed" and info.result == {"memory_ids": ["m1"]}
        await store.apply([_status(3, "failed", error="boom")])  # terminal to terminal still applies
        info = await store.task("t1")
        assert info is not None and info.status == "failed" and info.error == "boom"
