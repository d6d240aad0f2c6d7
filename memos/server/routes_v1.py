"""Routes beyond MemOS: the memory-change feed (SSE), cube replay, health and Prometheus metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from memos.api.product_models import BaseResponse
from memos.application.feeds import MAX_OFFSET, Cursor, format_cursor, parse_cursor, parse_offset
from memos.application.service import MemoryService
from memos.server.auth import Caller, acting_user, get_caller
from memos.server.metrics import CONTENT_TYPE, Metrics
from schemas.errors import PermissionDenied, ValidationFailed

__all__ = ["feed_start", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()
CallerDep = Annotated[Caller, Depends(get_caller)]
UserQuery = Annotated[str | None, Query(max_length=256, description="User (defaults to the API key's user).")]


def _service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


@router.get("/healthz", tags=["ops"], summary="Liveness (no authentication)")
async def healthz(request: Request) -> Response:
    """200 once the runtime is up; 503 naming them once a stage this process hosts stopped on an error (its
    log says why): restart the server. A stage behind wherever it runs (its oldest uncommitted record waited
    over ``server.behind_after_s``) is named under ``behind`` with status "behind" and 200: restarting this
    server would not help it. That answer is read off the log in the background, at most every 10 s."""
    started = hasattr(request.app.state, "runtime")
    service = _service(request) if hasattr(request.app.state, "service") else None
    failed = service.failed_stages() if service is not None else []
    behind = service.stages_behind() if service is not None and started else []
    status = 503 if failed else 200
    word = "failing" if failed else "behind" if behind else "ok"
    message = f"stopped: {'; '.join(failed)}" if failed else f"behind: {'; '.join(behind)}" if behind else "ok"
    return JSONResponse({
        "code": status,
        "message": message,
        "data": {"status": word, "started": started, "failed_stages": failed, "behind": behind},
    }, status_code=status)


@router.get(
    "/metrics",
    tags=["ops"],
    summary="Prometheus metrics (admin key, or local-only mode)",
    response_class=Response,
)
async def metrics(request: Request, caller: CallerDep) -> Response:
    """Requests and latency per route, processor lag, tasks by status, model tokens (text format 0.0.4)."""
    if caller.user_id is not None and not caller.is_admin:
        raise PermissionDenied("metrics are for admin keys (`memos users create NAME --admin`)")
    registry: Metrics = request.app.state.metrics
    return Response(await registry.render(_service(request)), media_type=CONTENT_TYPE)


def feed_start(start: str, cursor_text: str | None) -> Literal["beginning", "now"] | int | Cursor:
    """Where a feed starts: a cursor (Last-Event-ID or ``cursor``) wins over ``from``."""
    if cursor_text:
        return parse_cursor(cursor_text)
    if start in ("beginning", "now"):
        return start  # type: ignore[return-value]
    offset = parse_offset(start)
    if offset is not None:
        return offset
    raise ValidationFailed(
        f"from must be 'beginning', 'now' or an offset (ASCII digits, at most {MAX_OFFSET}), not {start[:64]!r}",
        field="from",
    )


@router.get(
    "/v1/feed",
    tags=["feed"],
    summary="Memory-change feed (SSE, resumable with Last-Event-ID)",
    response_class=EventSourceResponse,
)
async def feed(
    request: Request,
    caller: CallerDep,
    user_id: UserQuery = None,
    cube: Annotated[
        list[str] | None, Query(description="Cubes to follow (repeatable); default: all readable.")
    ] = None,
    start: Annotated[
        str,
        Query(
            alias="from",
            max_length=20,
            pattern=r"^(beginning|now|\d+)$",
            description="'beginning', 'now' or an offset per partition.",
        ),
    ] = "now",
    cursor: Annotated[
        str | None, Query(max_length=4096, description="Resume exactly (as Last-Event-ID).")
    ] = None,
    follow: Annotated[
        bool, Query(description="Keep waiting for new events; false ends at the current end.")
    ] = True,
    limit: Annotated[int | None, Query(ge=1, description="Stop after this many events.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=4096)] = None,
) -> EventSourceResponse:
    """Server-sent events, one per memory event: ``event`` is the event type, ``id`` the cursor after it.

    Reconnecting with ``Last-Event-ID`` resumes exactly after the last event delivered, for the same
    set of cubes. Embeddings are left out of the payloads.
    """
    service = _service(request)
    user = acting_user(caller, user_id)
    begin = feed_start(start, last_event_id or cursor)
    changes = await service.feed(user, cube, start=begin, follow=follow, everything=caller.is_admin,
                                 key_id=caller.key_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        count = 0
        async for envelope, after in changes:
            payload = {
                "position": {
                    "topic": envelope.position.topic,
                    "partition": envelope.position.partition,
                    "offset": envelope.position.offset,
                },
                "event": envelope.event.model_dump(mode="json", exclude={"embedding"}),
            }
            yield {
                "id": format_cursor(after),
                "event": envelope.event.event_type,
                "data": json.dumps(payload, ensure_ascii=False),
            }
            count += 1
            if limit is not None and count >= limit:
                return

    return EventSourceResponse(events(), ping=15)


@router.post(
    "/v1/cubes/{cube_id}/replay",
    tags=["cubes"],
    summary="Rebuild a cube's projections from the log",
    response_model=BaseResponse[dict[str, Any]],
)
async def replay(
    request: Request,
    caller: CallerDep,
    cube_id: Annotated[str, Path(min_length=1, max_length=256, description="Cube to rebuild.")],
    user_id: UserQuery = None,
) -> BaseResponse[dict[str, Any]]:
    """Drop the cube from every projection and rebuild it from the memories topic (needs write access)."""
    user = acting_user(caller, user_id)
    applied = await _service(request).replay(cube_id, user_id=user)
    return BaseResponse[dict[str, Any]](
        message="Cube replayed", data={"cube_id": cube_id, "events_applied": applied}
    )
