"""Tasks: submitting scheduler work, task status scoped to its user, waiting, and task handlers.

Task ids are the server's: an add's tasks get fresh ids, and a caller's own id is kept as the tasks'
``business_task_id``. A user sees a task only when it is the user's (a submitted task names its user;
an add's task belongs to the cube's readers, who alone could have written to it), so one user's task id
can never name, read or finish another user's task.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from memory_store.control.base import FINISHED, TaskInfo
from memos.application.cube_guard import CubeGuard
from memos.application.ids import check_id
from memos.application.limits import MAX_TASK_ID_CHARS, check_text
from memos.application.ports import Platform, TaskHandler
from schemas.errors import NotFound, PermissionDenied, ValidationFailed
from schemas.events import TaskSubmitted

__all__ = ["TERMINAL", "TaskUseCases", "TaskWait", "task_progress", "task_view"]

logger = logging.getLogger(__name__)

TERMINAL = FINISHED
"""Statuses after which a task never changes again."""
_GRACE_S = 3.0
"""How long a named task may be unknown (its status not yet projected) before waiting for it is NotFound."""


def task_progress(task: TaskInfo) -> dict[str, Any] | None:
    """How far a task has come (``{step, done, total}``) where its worker reported it, else None.

    The derivation stage reports a large add's steps as 'in_progress' statuses and its last step in the
    final status, so this reads the same after a restart or a replay of the tasks topic."""
    progress = task.result.get("progress") if isinstance(task.result, dict) else None
    if not isinstance(progress, dict) or not {"step", "done", "total"} <= progress.keys():
        return None
    return {"step": str(progress["step"]), "done": int(progress["done"]), "total": int(progress["total"])}


def task_view(task: TaskInfo) -> dict[str, Any]:
    """A task as front ends show it (its fields, and ``progress`` where it was reported)."""
    view = asdict(task)
    view["progress"] = task_progress(task)
    return view


@dataclass(frozen=True, slots=True)
class TaskWait:
    """Result of waiting for tasks."""

    done: bool
    timed_out: bool
    waited_seconds: float
    tasks: list[TaskInfo]


def _check_task_id(value: str, field: str) -> str:
    if not value or len(value) > MAX_TASK_ID_CHARS:
        raise ValidationFailed(f"{field} must be 1-{MAX_TASK_ID_CHARS} characters", field=field)
    check_text(value, field)
    return value


_PER_CUBE = 1000
"""Most tasks of one cube an unnamed listing returns (the newest): one busy cube, a shared one where others write
too, does not crowd the user's other cubes out."""
_MAX_LISTED = 100_000
"""Most tasks one unnamed listing returns (the newest)."""


class TaskUseCases:
    """Task use cases; mixed into :class:`memos.application.service.MemoryService`."""

    rt: Platform
    cube_guard: CubeGuard

    async def may_read(self, user_id: str, cube_id: str) -> bool:  # provided by AccessUseCases
        raise NotImplementedError

    async def _visible(self, user_id: str, task: TaskInfo) -> bool:
        if task.user_id:
            return task.user_id == user_id
        return await self.may_read(user_id, task.cube_id)

    async def find_tasks(self, user_id: str, *, task_id: str | None = None,
                         business_task_id: str | None = None) -> list[TaskInfo] | None:
        """The user's tasks a request names: a task id (the server's, or the caller's own business id),
        a business id, or neither (every task of the cubes the user may read). None: nothing of the user's
        is known under that name (another user's task is just as unknown)."""
        user_id = check_id(user_id, "user_id")
        control = self.rt.control
        if task_id:
            _check_task_id(task_id, "task_id")
            task = await control.task(task_id)
            if task is not None and await self._visible(user_id, task):
                return [task]
            business_task_id = task_id
        if business_task_id:
            _check_task_id(business_task_id, "business_task_id")
            found = [t for t in await control.tasks(business_task_id=business_task_id)
                     if await self._visible(user_id, t)]
            return found or None
        readable = [c.cube_id for c in await control.cubes_of(user_id) if c.access in ("owner", "write", "read")]
        if not readable:
            return []
        # one read however many cubes; a task of a readable cube is the user's to see unless another user
        # submitted it (``_visible`` without a query per task)
        listed: list[TaskInfo] = await control.tasks(cube_ids=readable, per_cube=_PER_CUBE, limit=_MAX_LISTED)
        return [t for t in listed if t.user_id in ("", user_id)]

    async def task_status(self, user_id: str, task_id: str) -> list[TaskInfo]:
        """The user's task(s) named ``task_id``; NotFound otherwise (whoever else has such a task)."""
        tasks = await self.find_tasks(user_id, task_id=task_id)
        if tasks is None:
            raise NotFound(f"task {task_id!r} not found", field="task_id")
        return tasks

    async def all_tasks(self, user_id: str | None = None) -> list[TaskInfo]:
        """Every task of the user's readable cubes (None: every task; operators)."""
        if user_id is None:
            tasks: list[TaskInfo] = await self.rt.control.tasks(limit=1_000_000)
            return tasks
        return await self.find_tasks(user_id) or []

    async def task_counts(self) -> dict[str, int]:
        """Tasks per status (operators, metrics)."""
        counts: dict[str, int] = await self.rt.control.task_counts()
        return counts

    async def wait_tasks(self, user_id: str, *, task_id: str | None = None, business_task_id: str | None = None,
                         timeout_s: float = 120.0, poll_s: float = 0.2) -> TaskWait:
        """Wait until the named tasks (else every task of the user) are finished or ``timeout_s`` passed.

        A named task that stays unknown for a few seconds is NotFound. Status lives in the control
        projection, which the control stage updates as task records arrive: this polls it.
        """
        started = time.monotonic()
        while True:
            tasks = await self.find_tasks(user_id, task_id=task_id, business_task_id=business_task_id)
            waited = time.monotonic() - started
            if tasks is None:
                if waited >= min(_GRACE_S, timeout_s):
                    field = "task_id" if task_id else "business_task_id"
                    raise NotFound(f"{field} {task_id or business_task_id!r} not found", field=field)
            else:
                pending = [t for t in tasks if t.status not in TERMINAL]
                if not pending or waited >= timeout_s:
                    return TaskWait(done=not pending, timed_out=bool(pending), waited_seconds=round(waited, 3),
                                    tasks=tasks)
            limit = timeout_s if tasks is not None else min(_GRACE_S, timeout_s)
            await asyncio.sleep(max(0.0, min(poll_s, limit - waited)))

    async def submit_tasks(self, items: Sequence[dict[str, Any]]) -> list[str]:
        """Append TaskSubmitted events (user_id, cube_id, label, content, ...); returns task ids.

        A given task id must be new or the same user's (an id another user's task has is refused).
        Waits until the tasks are in the control projection (read your writes).
        """
        events = []
        for n, item in enumerate(items):
            user_id = check_id(item["user_id"], f"items.{n}.user_id")
            cube_id = check_id(item["cube_id"], f"items.{n}.cube_id")
            task_id = _check_task_id(str(item.get("task_id") or uuid.uuid4().hex), f"items.{n}.task_id")
            known = await self.rt.control.task(task_id)
            if known is not None and known.user_id not in ("", user_id):
                raise PermissionDenied(f"task id {task_id!r} is taken", field=f"items.{n}.task_id")
            events.append(TaskSubmitted(
                event_id=uuid.uuid4(), occurred_at=self.rt.now(), key=cube_id, producer="scheduler",
                task_id=task_id, user_id=user_id, cube_id=cube_id, label=str(item["label"]),
                content=str(item.get("content", "")), business_task_id=item.get("business_task_id"),
                session_id=item.get("session_id") or "default_session", payload=item.get("payload", {}),
            ))
        # Not counted against door.max_pending_per_user: tasks come from in-process code only (no front end
        # submits them), and a handler's follow-up tasks would wait for the stage that runs the handler.
        async with self.cube_guard.writing([e.cube_id for e in events]):  # a forget waits for these
            positions = await self.rt.publish(events)
        await self.rt.settle_control(positions)
        return [e.task_id for e in events]

    def register_task_handler(self, label: str, handler: TaskHandler | None) -> None:
        """Install (None: remove) the handler the dispatch stage runs for ``label``."""
        self.rt.register_task_handler(label, handler)

    def task_handler(self, label: str) -> TaskHandler | None:
        """The handler installed for ``label``, if any."""
        return self.rt.task_handler(label)

    async def task_records(self, *, task_id: str | None = None, business_task_id: str | None = None,
                           user_id: str | None = None) -> list[TaskInfo]:
        """Tasks by id, business id or user, unscoped: for in-process callers (the scheduler) and operators."""
        if task_id is not None:
            task = await self.rt.control.task(task_id)
            return [task] if task is not None else []
        tasks: list[TaskInfo] = await self.rt.control.tasks(business_task_id=business_task_id, user_id=user_id)
        return tasks
