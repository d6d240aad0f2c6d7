"""MemOS's scheduler routes under ``/product/scheduler``: task status, summaries and waiting for tasks."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from memos.api.product_models import (
    AllStatusResponse,
    AllStatusResponseData,
    BaseResponse,
    StatusResponse,
    StatusResponseItem,
    TaskSummary,
)
from memos.application.service import MemoryService
from memos.application.tasks import TERMINAL, task_progress, task_view
from memos.server.auth import Caller, acting_user, get_caller

__all__ = ["TERMINAL", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/product/scheduler", tags=["scheduler"])
CallerDep = Annotated[Caller, Depends(get_caller)]
UserQuery = Annotated[str | None, Query(max_length=256, description="User (defaults to the API key's user).")]

def _service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


def _summary(tasks: list[Any]) -> TaskSummary:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.status] = counts.get(task.status, 0) + 1
    known = {k: v for k, v in counts.items() if k in TaskSummary.model_fields}
    return TaskSummary(**known, total=len(tasks))


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
    tasks = await service.task_status(user, task_id) if task_id else await service.all_tasks(user)
    items = [StatusResponseItem(task_id=t.task_id, status=t.status, progress=task_progress(t))  # type: ignore[arg-type]
             for t in tasks]
    return StatusResponse(data=items)


@router.get("/allstatus", summary="Task counts by status", response_model=AllStatusResponse)
async def scheduler_allstatus(
    request: Request, caller: CallerDep, user_id: UserQuery = None
) -> AllStatusResponse:
    """Counts of the user's tasks (every task for an admin without user_id): scheduler tasks and all."""
    service = _service(request)
    everyone = caller.is_admin and not user_id
    tasks = await service.all_tasks(None if everyone else acting_user(caller, user_id))
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
    user = acting_user(caller, user_id or user_name)
    waited = await _service(request).wait_tasks(
        user, task_id=task_id, business_task_id=business_task_id, timeout_s=timeout_seconds, poll_s=poll_interval
    )
    return BaseResponse[dict[str, Any]](
        message="timeout" if waited.timed_out else "completed",
        data={
            "done": waited.done,
            "timed_out": waited.timed_out,
            "waited_seconds": waited.waited_seconds,
            "tasks": [_view(t) for t in waited.tasks[:1000]],
        },
    )


def _view(task: Any) -> dict[str, Any]:
    view = task_view(task)
    return {k: view[k] for k in ("task_id", "status", "label", "cube_id", "business_task_id", "error", "result",
                                 "updated_at", "progress")}
