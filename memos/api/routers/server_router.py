"""MemOS's server-router functions, in process: add, search, get, delete, chat and scheduler status.

Importing this module starts nothing: the embedded runtime starts on the first call (data directory
$MEMOS_HOME, default ~/.memos) and stops cleanly at interpreter exit. Errors in the request (unknown
cube the user may not use, empty query, ...) come back as a response with a 4xx ``code`` and a message
that names the field, as the HTTP server does; nothing is half-written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from memos.api.product_models import (
    APIADDRequest,
    APIChatCompleteRequest,
    APISearchRequest,
    DeleteMemoryRequest,
    GetMemoryRequest,
)
from memos.api.responses import (
    BaseResponse,
    ChatResponse,
    DeleteMemoryResponse,
    GetMemoryResponse,
    MemoryResponse,
    SearchResponse,
)
from memos.application.errors import describe, status_of
from memos.application.models import AddRequest, DeleteRequest, MemoriesQuery, SearchRequest, build
from memos.application.tasks import task_view
from memos.client import default_client
from schemas.errors import MemorySystemError, NotFound

__all__ = [
    "add_memories",
    "chat_complete",
    "delete_memories",
    "error_code",
    "get_memory",
    "scheduler_status",
    "search_memories",
]

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseResponse[Any])


def error_code(exc: MemorySystemError) -> int:
    """HTTP-like code of an error (the application layer's one map): 404, 403, 413, 422, 429, 503, 504 or 500."""
    return status_of(exc)


def _guard(response_cls: type[R], fn: Callable[[], Any], ok_message: str) -> R:
    try:
        data = fn()
    except MemorySystemError as exc:
        logger.warning("request failed error=%r", exc)
        return response_cls(code=error_code(exc), message=describe(exc), data=None)
    return response_cls(code=200, message=ok_message, data=data)


def _messages(req: APIADDRequest) -> list[dict[str, Any]]:
    messages = req.messages
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out: list[dict[str, Any]] = []
    for m in messages or []:
        item = dict(m)
        if "role" not in item:  # a bare content part (MemOS accepts these): wrap it in a user message
            item = {"role": "user", "content": [item]}
        out.append(item)
    return out


def add_memories(add_req: APIADDRequest) -> MemoryResponse:
    """Add messages to the writable cubes; sync waits until the memories are searchable."""
    client = default_client()

    def run() -> list[dict[str, Any]]:
        request = build(
            AddRequest, user_id=add_req.user_id or "default_user", cube_ids=tuple(add_req.writable_cube_ids or ()),
            messages=_messages(add_req), session_id=add_req.session_id or "default_session",
            mode=add_req.mode or "fine", async_mode=add_req.async_mode, info=add_req.info or {},
            custom_tags=tuple(add_req.custom_tags or ()), task_id=add_req.task_id, origin="local",
        )
        data: list[dict[str, Any]] = []
        for entry in client.call(client.service.add_memories(request)):
            if add_req.async_mode == "async":
                data.append({"cube_id": entry.cube_id, "task_id": entry.task_id, "status": entry.status})
            data += [{**memory, "task_id": entry.task_id} for memory in entry.memories]
        return data

    return _guard(MemoryResponse, run, "Memory added successfully")


def search_memories(search_req: APISearchRequest) -> SearchResponse:
    """Search the readable cubes; ``data`` has MemOS's buckets (text_mem, pref_mem, tool_mem, ...)."""
    client = default_client()
    cubes = list(search_req.readable_cube_ids or ([search_req.mem_cube_id] if search_req.mem_cube_id else []))

    def run() -> dict[str, Any]:
        fields = search_req.model_dump()
        fields["mode"] = search_req.mode.value
        request = SearchRequest.from_memos(search_req.user_id, cubes, search_req.query, fields)
        result: dict[str, Any] = client.call(client.service.search_memories(request))
        return result

    return _guard(SearchResponse, run, "Search completed successfully")


def get_memory(get_req: GetMemoryRequest) -> GetMemoryResponse:
    """Every current memory of a cube, bucketed like search results (and filtered and paged as asked)."""
    client = default_client()

    def run() -> dict[str, Any]:
        query = build(
            MemoriesQuery, user_id=get_req.user_id or "default_user", cube_id=get_req.mem_cube_id,
            include_preference=get_req.include_preference, include_tool_memory=get_req.include_tool_memory,
            include_skill_memory=get_req.include_skill_memory, filter=get_req.filter, page=get_req.page,
            page_size=get_req.page_size,
        )
        data: dict[str, Any] = client.call(client.service.get_memories(query))
        return data

    return _guard(GetMemoryResponse, run, "Memories retrieved successfully")


def delete_memories(delete_req: DeleteMemoryRequest) -> DeleteMemoryResponse:
    """Delete (retire) memories by id, file id or filter, scoped to the named cubes; unknown ids are NotFound."""
    client = default_client()

    def run() -> dict[str, Any]:
        request = build(
            DeleteRequest, user_id=delete_req.user_id or "default_user", cube_ids=tuple(delete_req.writable_cube_ids),
            memory_ids=tuple(delete_req.memory_ids or ()), file_ids=tuple(delete_req.file_ids or ()),
            filter=delete_req.filter,
        )
        return {"status": "success", "deleted_ids": client.call(client.service.delete_memories(request))}

    return _guard(DeleteMemoryResponse, run, "Memories deleted successfully")


def chat_complete(chat_req: APIChatCompleteRequest) -> ChatResponse:
    """Answer a query with memories of the readable cubes (warm KV cache or prompt injection)."""
    from memos.chat import answer

    client = default_client()
    return _guard(ChatResponse, lambda: answer(client, chat_req), "Chat completed successfully")


def scheduler_status(user_id: str, task_id: str | None = None, business_task_id: str | None = None
                     ) -> BaseResponse[Any]:
    """Status of the user's task, of every task of a business task id, or of every task of the user."""
    client = default_client()

    def run() -> list[dict[str, Any]]:
        found = client.call(client.service.find_tasks(user_id, task_id=task_id, business_task_id=business_task_id))
        if found is None:
            name = "task_id" if task_id else "business_task_id"
            raise NotFound(f"{name} {task_id or business_task_id!r} not found", field=name)
        return [task_view(t) for t in found]

    return _guard(BaseResponse[Any], run, "ok")
