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
from memos.application.models import AddRequest, DeleteRequest, MemoriesQuery, SearchRequest
from memos.application.service import MemoryService
from memos.server.auth import Caller, acting_user, get_caller

__all__ = ["ChatFn", "CreateCubeRequest", "ShareCubeRequest", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/product", tags=["product"])
CallerDep = Annotated[Caller, Depends(get_caller)]

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


def _trace_id(request: Request) -> str | None:
    value = request.headers.get("x-trace-id") or request.headers.get("x-request-id")
    return value[:128] if value else None


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# --- add and search ---------------------------------------------------------------------------------------


@router.post("/add", summary="Add memories", response_model=MemoryResponse)
async def add_memories(body: APIADDRequest, request: Request, caller: CallerDep) -> MemoryResponse:
    """Record messages for each writable cube (none named: the user's own cube, created for it like an
    unknown cube the user names); ``sync`` returns the memories, ``async`` the task ids."""
    user = acting_user(caller, body.user_id)
    messages = body.messages
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    info = dict(body.info or {})
    if body.is_feedback:
        info.setdefault("is_feedback", True)
    results = await _service(request).add_memories(AddRequest(
        user_id=user, cube_ids=tuple(body.writable_cube_ids or ()), messages=list(messages or []),
        session_id=body.session_id or "default_session", mode=body.mode or "fine", async_mode=body.async_mode,
        info=info, custom_tags=tuple(body.custom_tags or ()), task_id=body.task_id, trace_id=_trace_id(request),
        origin="remote",
    ))
    if body.async_mode == "async":
        data: list[Any] = [{"cube_id": r.cube_id, "task_id": r.task_id, "status": r.status} for r in results]
        return MemoryResponse(message="Memory add accepted; poll /product/scheduler/status", data=data)
    data = [{**m, "task_id": r.task_id} for r in results for m in r.memories]
    failed = [r for r in results if r.status == "failed" or r.error]
    if failed:
        problems = "; ".join(f"cube {r.cube_id!r} (task {r.task_id}): {r.error or r.status}" for r in failed)
        return MemoryResponse(message=f"Memory recorded, but derivation reported errors: {problems}", data=data)
    return MemoryResponse(message="Memory added successfully", data=data)


@router.post("/search", summary="Search memories", response_model=SearchResponse)
async def search_memories(body: APISearchRequest, request: Request, caller: CallerDep) -> SearchResponse:
    """Search the readable cubes (all must be readable by the user; none named: the user's own cube)."""
    user = acting_user(caller, body.user_id)
    fields = body.model_dump()
    fields["mode"] = body.mode.value
    cubes = body.readable_cube_ids or ([body.mem_cube_id] if body.mem_cube_id else [])
    result = await _service(request).search_memories(SearchRequest.from_memos(user, cubes, body.query, fields))
    return SearchResponse(message="Search completed successfully", data=result)


# --- get and delete -----------------------------------------------------------------------------------------


@router.post("/get_memory", summary="Export the memories of a cube", response_model=GetMemoryResponse)
async def get_memories(body: GetMemoryRequest, request: Request, caller: CallerDep) -> GetMemoryResponse:
    """Memories of one cube by kind (text, preference, tool, skill), optionally filtered and paged."""
    user = acting_user(caller, body.user_id)
    data = await _service(request).get_memories(MemoriesQuery(
        user_id=user, cube_id=body.mem_cube_id, include_preference=body.include_preference,
        include_tool_memory=body.include_tool_memory, include_skill_memory=body.include_skill_memory,
        filter=body.filter, page=body.page, page_size=body.page_size,
    ))
    return GetMemoryResponse(message="Memories retrieved successfully", data=data)


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
    user = acting_user(caller, body.user_id)
    deleted = await _service(request).delete_memories(DeleteRequest(
        user_id=user, cube_ids=tuple(body.writable_cube_ids), memory_ids=tuple(body.memory_ids or ()),
        file_ids=tuple(body.file_ids or ()), filter=body.filter,
    ))
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
    await service.check_chat(user, body.readable_cube_ids or [], body.writable_cube_ids or [],
                             record=bool(body.add_message_on_answer), create=chat is not None)  # none for a 501
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
