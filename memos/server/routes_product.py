"""MemOS's product API under ``/product``: add, search, get and delete memories, cubes, chat."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from memos.api.product_models import (
    APIADDRequest,
    APIChatCompleteRequest,
    APISearchRequest,
    BaseResponse,
    ChatRequest,
    ChatResponse,
    CubeId,
    DeleteMemoryRequest,
    DeleteMemoryResponse,
    GetMemoryRequest,
    GetMemoryResponse,
    MemoryResponse,
    SearchResponse,
)
from memos.application.service import MemoryService, memory_view
from memos.runtime import Runtime
from memos.server.auth import Caller, acting_user, get_caller
from processors.filters import compile_filter, matches
from schemas.errors import NotFound
from schemas.memory import MemoryRecord

__all__ = ["ChatFn", "CreateCubeRequest", "ShareCubeRequest", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/product", tags=["product"])
CallerDep = Annotated[Caller, Depends(get_caller)]

PREF_TYPES = ("PreferenceMemory",)
TOOL_TYPES = ("ToolSchemaMemory", "ToolTrajectoryMemory")
SKILL_TYPES = ("SkillMemory",)
TEXT_TYPES = ("WorkingMemory", "LongTermMemory", "UserMemory", "OuterMemory")


class ChatFn(Protocol):
    """What answers ``/product/chat/*``: yields the answer's text chunks (joined for chat/complete).

    It is called after the user was authenticated and its read (and, with ``add_message_on_answer``,
    write) access to the request's cubes was checked. Set it with ``create_app(chat=...)`` or
    ``app.state.chat``.
    """

    def __call__(
        self, service: MemoryService, user_id: str, request: APIChatCompleteRequest | ChatRequest
    ) -> AsyncIterator[str]: ...


class CreateCubeRequest(BaseModel):
    """Create a cube owned by the caller (``POST /product/create_cube``)."""

    model_config = ConfigDict(extra="forbid")

    mem_cube_id: CubeId = Field(..., description="Id of the new cube.")
    user_id: str | None = Field(None, description="Owner; defaults to the API key's user.")
    cube_name: str | None = Field(None, max_length=256, description="Display name.")
    config: dict[str, Any] | None = Field(None, description="Free-form cube configuration.")


class ShareCubeRequest(BaseModel):
    """Share a cube the caller owns (``POST /product/share_cube``); access 'none' withdraws a share."""

    model_config = ConfigDict(extra="forbid")

    mem_cube_id: CubeId = Field(..., description="Cube to share.")
    target_user_id: str = Field(..., min_length=1, max_length=256, description="User to share it with.")
    access: Literal["read", "write", "none"] = Field("read", description="Access granted.")
    user_id: str | None = Field(None, description="The owner; defaults to the API key's user.")


def _service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _trace_id(request: Request) -> str | None:
    value = request.headers.get("x-trace-id") or request.headers.get("x-request-id")
    return value[:128] if value else None


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# --- add and search ---------------------------------------------------------------------------------------


@router.post("/add", summary="Add memories", response_model=MemoryResponse)
async def add_memories(body: APIADDRequest, request: Request, caller: CallerDep) -> MemoryResponse:
    """Record messages for each writable cube; ``sync`` returns the memories, ``async`` the task ids."""
    service = _service(request)
    user = acting_user(caller, body.user_id)
    cube_ids = _unique(body.writable_cube_ids or [user])
    messages = body.messages
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    info = dict(body.info or {})
    if body.is_feedback:
        info.setdefault("is_feedback", True)
    results = await service.add(
        user,
        cube_ids,
        list(messages or []),
        session_id=body.session_id or "default_session",
        mode=body.mode or "fine",
        async_mode=body.async_mode,
        info=info,
        custom_tags=body.custom_tags or (),
        task_id=body.task_id,
        trace_id=_trace_id(request),
        auto_create=request.app.state.settings.server.auto_create_cubes,
    )
    if body.async_mode == "async":
        data: list[Any] = [
            {"cube_id": r["cube_id"], "task_id": r["task_id"], "status": r["status"]} for r in results
        ]
        return MemoryResponse(message="Memory add accepted; poll /product/scheduler/status", data=data)
    data = [{**m, "task_id": r["task_id"]} for r in results for m in r["memories"]]
    failed = [r for r in results if r["status"] == "failed" or r.get("error")]
    if failed:
        problems = "; ".join(
            f"cube {r['cube_id']!r} (task {r['task_id']}): {r.get('error') or r['status']}" for r in failed
        )
        return MemoryResponse(
            message=f"Memory recorded, but derivation reported errors: {problems}", data=data
        )
    return MemoryResponse(message="Memory added successfully", data=data)


@router.post("/search", summary="Search memories", response_model=SearchResponse)
async def search_memories(body: APISearchRequest, request: Request, caller: CallerDep) -> SearchResponse:
    """Search the readable cubes (all must be readable by the user)."""
    user = acting_user(caller, body.user_id)
    cube_ids = _unique(body.readable_cube_ids or [user])
    params = body.model_dump(exclude={"query", "user_id", "readable_cube_ids", "mem_cube_id"})
    params["mode"] = body.mode.value
    result = await _service(request).search(user, cube_ids, body.query, **_search_params(params))
    return SearchResponse(message="Search completed successfully", data=result)


def _search_params(params: dict[str, Any]) -> dict[str, Any]:
    """Keep the request fields the search query model knows (it rejects the others)."""
    from processors.retrieval import SearchQuery

    return {k: v for k, v in params.items() if k in SearchQuery.model_fields}


# --- get and delete -----------------------------------------------------------------------------------------


@router.post("/get_memory", summary="Export the memories of a cube", response_model=GetMemoryResponse)
async def get_memories(body: GetMemoryRequest, request: Request, caller: CallerDep) -> GetMemoryResponse:
    """Memories of one cube by kind (text, preference, tool, skill), optionally filtered and paged."""
    service, rt = _service(request), _runtime(request)
    user = acting_user(caller, body.user_id)
    cube = body.mem_cube_id
    service.check_read(user, cube)
    types = list(TEXT_TYPES)
    types += list(PREF_TYPES) if body.include_preference else []
    types += list(TOOL_TYPES) if body.include_tool_memory else []
    types += list(SKILL_TYPES) if body.include_skill_memory else []
    flt = compile_filter(body.filter) if body.filter else None
    records = await rt.graph.list_memories(cube, memory_types=types)
    if flt is not None:
        records = [r for r in records if matches(flt, r)]
    total = len(records)
    if body.page is not None or body.page_size is not None:
        size = body.page_size or 50
        start = ((body.page or 1) - 1) * size
        records = records[start : start + size]
    buckets: dict[str, list[dict[str, Any]]] = {
        "text_mem": [],
        "pref_mem": [],
        "tool_mem": [],
        "skill_mem": [],
    }
    for record in records:
        buckets[_bucket(record)].append(memory_view(record))
    data: dict[str, Any] = {
        name: [{"cube_id": cube, "memories": items, "total_nodes": len(items)}]
        for name, items in buckets.items()
    }
    data["total"] = total
    return GetMemoryResponse(message="Memories retrieved successfully", data=data)


def _bucket(record: MemoryRecord) -> str:
    if record.memory_type in PREF_TYPES:
        return "pref_mem"
    if record.memory_type in TOOL_TYPES:
        return "tool_mem"
    if record.memory_type in SKILL_TYPES:
        return "skill_mem"
    return "text_mem"


@router.get("/get_memory/{memory_id}", summary="Get one memory", response_model=GetMemoryResponse)
async def get_memory_by_id(
    request: Request,
    caller: CallerDep,
    memory_id: Annotated[str, Path(min_length=1, max_length=256, description="Memory id.")],
    mem_cube_id: Annotated[str, Query(min_length=1, max_length=256, description="Cube the memory is in.")],
    user_id: Annotated[str | None, Query(max_length=256, description="User (local-only mode).")] = None,
) -> GetMemoryResponse:
    """One memory of a cube (retired ones too, with their successors); 404 if it is not in that cube."""
    user = acting_user(caller, user_id)
    item = await _service(request).get_memory(user, mem_cube_id, memory_id)
    return GetMemoryResponse(message="Memory retrieved successfully", data=item)


@router.post(
    "/delete_memory", summary="Delete memories of the named cubes", response_model=DeleteMemoryResponse
)
async def delete_memories(
    body: DeleteMemoryRequest, request: Request, caller: CallerDep
) -> DeleteMemoryResponse:
    """Retire memories by id, file id or filter, only inside ``writable_cube_ids``; unknown ids are 404."""
    service, rt = _service(request), _runtime(request)
    user = acting_user(caller, body.user_id)
    cubes = _unique(body.writable_cube_ids)
    for cube in cubes:
        await service.check_write(user, cube, auto_create=False)
    plan: dict[str, list[str]] = {}
    if body.memory_ids:
        wanted = _unique(body.memory_ids)
        seen: set[str] = set()
        for cube in cubes:
            found = [r.id for r in await rt.graph.get(wanted, cube_id=cube)]
            plan[cube] = found
            seen.update(found)
        missing = [m for m in wanted if m not in seen]
        if missing:
            raise NotFound(f"memories {missing!r} not found in cubes {cubes!r}", field="memory_ids")
    selectors: list[dict[str, Any]] = []
    if body.file_ids:
        selectors.append({"file_ids": {"in": list(body.file_ids)}})
    if body.filter:
        selectors.append(body.filter)
    if selectors:
        flt = compile_filter(selectors[0] if len(selectors) == 1 else {"and": selectors})
        for cube in cubes:
            current = await rt.graph.list_memories(cube)
            plan[cube] = _unique(plan.get(cube, []) + [r.id for r in current if matches(flt, r)])
    deleted: list[str] = []
    for cube, ids in plan.items():
        if ids:
            deleted += await service.delete(user, cube, ids)
    return DeleteMemoryResponse(
        message="Memories deleted successfully", data={"status": "success", "deleted_ids": deleted}
    )


# --- cubes --------------------------------------------------------------------------------------------------


@router.post("/create_cube", summary="Create a cube", response_model=BaseResponse[dict[str, Any]])
async def create_cube(
    body: CreateCubeRequest, request: Request, caller: CallerDep
) -> BaseResponse[dict[str, Any]]:
    """Create a cube owned by the user (idempotent for its owner; 403 if another user owns the id)."""
    user = acting_user(caller, body.user_id)
    created = await _service(request).create_cube(
        body.mem_cube_id, owner_id=user, cube_name=body.cube_name or "", config=body.config
    )
    return BaseResponse[dict[str, Any]](
        message="Cube created" if created else "Cube already exists",
        data={"cube_id": body.mem_cube_id, "owner_id": user, "created": created},
    )


@router.post("/share_cube", summary="Share a cube", response_model=BaseResponse[dict[str, Any]])
async def share_cube(
    body: ShareCubeRequest, request: Request, caller: CallerDep
) -> BaseResponse[dict[str, Any]]:
    """Grant another user read or write access to a cube the caller owns ('none' withdraws it)."""
    user = acting_user(caller, body.user_id)
    await _service(request).share_cube(
        body.mem_cube_id, owner_id=user, user_id=body.target_user_id, access=body.access
    )
    return BaseResponse[dict[str, Any]](
        message="Cube shared",
        data={"cube_id": body.mem_cube_id, "user_id": body.target_user_id, "access": body.access},
    )


# --- chat ---------------------------------------------------------------------------------------------------


async def _chat_ready(
    request: Request, caller: Caller, body: APIChatCompleteRequest | ChatRequest
) -> tuple[ChatFn, MemoryService, str]:
    chat: ChatFn | None = request.app.state.chat
    service = _service(request)
    user = acting_user(caller, body.user_id)
    for cube in _unique(body.readable_cube_ids or []):
        service.check_read(user, cube)
    if body.add_message_on_answer:
        for cube in _unique(body.writable_cube_ids or []):
            await service.check_write(
                user, cube, auto_create=request.app.state.settings.server.auto_create_cubes
            )
    if chat is None:
        raise HTTPException(
            501,
            "chat is not configured on this server: set derivation.llm_url and start "
            "it with a chat model (create_app(chat=...) / app.state.chat)",
        )
    return chat, service, user


@router.post("/chat/complete", summary="Chat with memories (complete answer)", response_model=ChatResponse)
async def chat_complete(body: APIChatCompleteRequest, request: Request, caller: CallerDep) -> ChatResponse:
    """Answer a query using the user's memories; 501 when no chat model is configured."""
    chat, service, user = await _chat_ready(request, caller, body)
    parts = [part async for part in chat(service, user, body)]
    return ChatResponse(message="Chat completed successfully", data="".join(parts))


@router.post("/chat/stream", summary="Chat with memories (SSE)")
async def chat_stream(body: ChatRequest, request: Request, caller: CallerDep) -> EventSourceResponse:
    """Stream an answer as SSE ``data: {"type": "text"|"error"|"end", "data": ...}``; 501 without a model."""
    chat, service, user = await _chat_ready(request, caller, body)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for part in chat(service, user, body):
                yield {"data": json.dumps({"type": "text", "data": part}, ensure_ascii=False)}
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band, then end
            logger.warning("chat stream failed user=%s error=%r", user, exc)
            yield {"data": json.dumps({"type": "error", "data": f"{type(exc).__name__}: {exc}"})}
        yield {"data": json.dumps({"type": "end", "data": uuid.uuid4().hex})}

    return EventSourceResponse(events(), ping=15)
