"""MemOS's scheduler routes under ``/product/scheduler``: task status, summaries and waiting for tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from memory_store.control import TaskInfo
from memos.api.product_models import (
    AllStatusResponse,
    AllStatusResponseData,
    BaseResponse,
    StatusResponse,
    StatusResponseItem,
    TaskSummary,
)
from memos.application.service import MemoryService
from memos.server.auth import Caller, acting_user, get_caller
from schemas.errors import NotFound, PermissionDenied

__all__ = ["TERMINAL", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/product/scheduler", tags=["scheduler"])
CallerDep = Annotated[Caller, Depends(get_caller)]
UserQuery = Annotated[str | None, Query(max_length=256, description="User (defaults to the API key's user).")]

TERMINAL = frozenset({"completed", "failed", "cancelled"})
"""Statuses after which a task never changes again."""
_GRACE_S = 3.0
"""How long a named task may be unknown (its status event not yet projected) before it is a 404."""


def _service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


def _user_tasks(service: MemoryService, user: str) -> list[TaskInfo]:
    tasks: list[TaskInfo] = []
    for cube in service.control.cubes_of(user):
        tasks += service.control.tasks(cube_id=cube["cube_id"])
    return tasks


def _readable(service: MemoryService, user: str, task: TaskInfo) -> bool:
    try:
        service.check_read(user, task.cube_id)
    except (NotFound, PermissionDenied):
        return False
    return True


def _selected(
    service: MemoryService, user: str, task_id: str | None, business_task_id: str | None
) -> list[TaskInfo] | None:
    """The tasks a request names (None: a named task is unknown), only those of readable cubes."""
    if task_id:
        task = service.control.task(task_id)
        if task is None:
            return None
        if not _readable(service, user, task):
            raise PermissionDenied(f"user {user!r} may not read task {task_id!r}", field="task_id")
        return [task]
    if business_task_id:
        found = service.control.tasks(business_task_id=business_task_id)
        readable = [t for t in found if _readable(service, user, t)]
        if found and not readable:
            raise PermissionDenied(
                f"user {user!r} may not read task {business_task_id!r}", field="business_task_id"
            )
        return readable or None
    return _user_tasks(service, user)


def _summary(tasks: list[TaskInfo]) -> TaskSummary:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.status] = counts.get(task.status, 0) + 1
    known = {k: v for k, v in counts.items() if k in TaskSummary.model_fields}
    return TaskSummary(**known, total=len(tasks))


def _task_view(task: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "status": task.status,
        "label": task.label,
        "cube_id": task.cube_id,
        "business_task_id": task.business_task_id,
        "error": task.error,
        "result": task.result,
        "updated_at": task.updated_at,
    }


@router.get("/status", summary="Status of the user's tasks (or of one task)", response_model=StatusResponse)
async def scheduler_status(
    request: Request,
    caller: CallerDep,
    user_id: UserQuery = None,
    task_id: Annotated[str | None, Query(max_length=256, description="One task to query.")] = None,
) -> StatusResponse:
    """Task ids and statuses of the cubes the user can read; a named task that is unknown is 404."""
    service = _service(request)
    user = acting_user(caller, user_id)
    tasks = _selected(service, user, task_id, None)
    if tasks is None:
        raise NotFound(f"task {task_id!r} not found", field="task_id")
    items = [StatusResponseItem(task_id=t.task_id, status=t.status) for t in tasks]  # type: ignore[arg-type]
    return StatusResponse(data=items)


@router.get("/allstatus", summary="Task counts by status", response_model=AllStatusResponse)
async def scheduler_allstatus(
    request: Request, caller: CallerDep, user_id: UserQuery = None
) -> AllStatusResponse:
    """Counts of the user's tasks (every task for an admin without user_id): scheduler tasks and all."""
    service = _service(request)
    if caller.is_admin and not user_id:
        tasks = service.control.tasks(limit=1_000_000)
    else:
        tasks = _user_tasks(service, acting_user(caller, user_id))
    scheduled = [t for t in tasks if t.label != "add"]
    return AllStatusResponse(
        data=AllStatusResponseData(scheduler_summary=_summary(scheduled), all_tasks_summary=_summary(tasks))
    )


@router.get("/wait", summary="Wait until tasks are done", response_model=BaseResponse[dict[str, Any]])
@router.post("/wait", summary="Wait until tasks are done", response_model=BaseResponse[dict[str, Any]])
async def scheduler_wait(
    request: Request,
    caller: CallerDep,
    user_id: UserQuery = None,
    user_name: Annotated[str | None, Query(max_length=256, description="MemOS alias of user_id.")] = None,
    task_id: Annotated[str | None, Query(max_length=256, description="Wait for this task.")] = None,
    business_task_id: Annotated[
        str | None, Query(max_length=256, description="Wait for these tasks.")
    ] = None,
    timeout_seconds: Annotated[float, Query(gt=0, le=300, description="Give up after this long.")] = 120.0,
    poll_interval: Annotated[float, Query(ge=0.05, le=10, description="Seconds between checks.")] = 0.2,
) -> BaseResponse[dict[str, Any]]:
    """Block until the named task (or business task, or else every task of the user) is done.

    Answers 200 either way: ``data.done`` says whether everything finished, ``data.timed_out`` whether
    the timeout ran out first. A named task that stays unknown for a few seconds is a 404.
    """
    service = _service(request)
    user = acting_user(caller, user_id or user_name)
    started = time.monotonic()
    while True:
        tasks = _selected(service, user, task_id, business_task_id)
        waited = time.monotonic() - started
        if tasks is None:
            if waited >= min(_GRACE_S, timeout_seconds):
                field = "task_id" if task_id else "business_task_id"
                raise NotFound(f"{field} {task_id or business_task_id!r} not found", field=field)
        else:
            pending = [t for t in tasks if t.status not in TERMINAL]
            if not pending or waited >= timeout_seconds:
                timed_out = bool(pending)
                return BaseResponse[dict[str, Any]](
                    message="timeout" if timed_out else "completed",
                    data={
                        "done": not pending,
                        "timed_out": timed_out,
                        "waited_seconds": round(waited, 3),
                        "tasks": [_task_view(t) for t in tasks[:1000]],
                    },
                )
        limit = timeout_seconds if tasks is not None else min(_GRACE_S, timeout_seconds)
        await asyncio.sleep(max(0.0, min(poll_interval, limit - waited)))
