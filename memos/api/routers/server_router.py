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
from memos.client import default_client
from schemas.errors import MemorySystemError, NotFound, PayloadTooLarge, PermissionDenied, ValidationFailed

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
    """HTTP-like code of an error: 404, 403, 413, 422 or 500."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, ValidationFailed):
        return 422
    return 500


def _guard(response_cls: type[R], fn: Callable[[], Any], ok_message: str) -> R:
    try:
        data = fn()
    except MemorySystemError as exc:
        logger.warning("request failed error=%r", exc)
        return response_cls(code=error_code(exc), message=str(exc), data=None)
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
    user_id = add_req.user_id or "default_user"
    cubes = list(add_req.writable_cube_ids or [])

    def run() -> list[dict[str, Any]]:
        results = client.call(client.service.add(
            user_id, cubes, _messages(add_req), session_id=add_req.session_id or "default_session",
            mode=add_req.mode or "fine", async_mode=add_req.async_mode, info=add_req.info,
            custom_tags=add_req.custom_tags or (), task_id=add_req.task_id,
        ))
        data: list[dict[str, Any]] = []
        for entry in results:
            if add_req.async_mode == "async":
                data.append({"cube_id": entry["cube_id"], "task_id": entry["task_id"], "status": entry["status"]})
            for memory in entry["memories"]:
                data.append({**memory, "task_id": entry["task_id"]})
        return data

    return _guard(MemoryResponse, run, "Memory added successfully")


def search_memories(search_req: APISearchRequest) -> SearchResponse:
    """Search the readable cubes; ``data`` has MemOS's buckets (text_mem, pref_mem, tool_mem, ...)."""
    client = default_client()
    cubes = list(search_req.readable_cube_ids or ([search_req.mem_cube_id] if search_req.mem_cube_id else []))
    params = {
        "top_k": search_req.top_k,
        "session_id": search_req.session_id,
        "relativity": search_req.relativity,
        "dedup": search_req.dedup,
        "include_preference": search_req.include_preference,
        "pref_top_k": search_req.pref_top_k,
        "search_tool_memory": search_req.search_tool_memory,
        "tool_mem_top_k": search_req.tool_mem_top_k,
        "include_skill_memory": search_req.include_skill_memory,
        "skill_mem_top_k": search_req.skill_mem_top_k,
        "filter": search_req.filter,
        "mode": search_req.mode.value,
    }
    return _guard(SearchResponse,
                  lambda: client.call(client.service.search(search_req.user_id, cubes, search_req.query, **params)),
                  "Search completed successfully")


def get_memory(get_req: GetMemoryRequest) -> GetMemoryResponse:
    """Every current memory of a cube, bucketed like search results."""
    client = default_client()
    user_id = get_req.user_id or "default_user"

    def run() -> dict[str, Any]:
        items = client.call(client.service.get_all(user_id, get_req.mem_cube_id))
        buckets: dict[str, list[dict[str, Any]]] = {"text_mem": [], "pref_mem": [], "tool_mem": [], "skill_mem": []}
        for item in items:
            kind = item["metadata"]["memory_type"]
            if kind == "PreferenceMemory":
                if get_req.include_preference:
                    buckets["pref_mem"].append(item)
            elif kind in ("ToolSchemaMemory", "ToolTrajectoryMemory"):
                if get_req.include_tool_memory:
                    buckets["tool_mem"].append(item)
            elif kind == "SkillMemory":
                if get_req.include_skill_memory:
                    buckets["skill_mem"].append(item)
            else:
                buckets["text_mem"].append(item)
        if get_req.page and get_req.page_size:
            start = (get_req.page - 1) * get_req.page_size
            buckets = {k: v[start:start + get_req.page_size] for k, v in buckets.items()}
        return {k: [{"cube_id": get_req.mem_cube_id, "memories": v, "total_nodes": len(v)}]
                for k, v in buckets.items()}

    return _guard(GetMemoryResponse, run, "Memories retrieved successfully")


def delete_memories(delete_req: DeleteMemoryRequest) -> DeleteMemoryResponse:
    """Delete (retire) memories by id, scoped to the named cubes; ids of other cubes are NotFound."""
    client = default_client()
    user_id = delete_req.user_id or "default_user"

    def run() -> dict[str, Any]:
        ids = list(delete_req.memory_ids or [])
        if not ids:
            raise ValidationFailed("in-process delete needs memory_ids", field="memory_ids")
        deleted: dict[str, list[str]] = {}
        for cube_id in delete_req.writable_cube_ids:
            owned = [r["id"] for r in client.call(client.service.get_all(user_id, cube_id, include_retired=True))]
            mine = [m for m in ids if m in set(owned)]
            if mine:
                deleted[cube_id] = client.call(client.service.delete(user_id, cube_id, mine))
        missing = [m for m in ids if not any(m in v for v in deleted.values())]
        if missing:
            raise NotFound(f"memories {missing!r} are not in cubes {delete_req.writable_cube_ids!r}",
                           field="memory_ids")
        return {"deleted": deleted}

    return _guard(DeleteMemoryResponse, run, "Memories deleted successfully")


def chat_complete(chat_req: APIChatCompleteRequest) -> ChatResponse:
    """Answer a query with memories of the readable cubes (warm KV cache or prompt injection)."""
    from memos.chat import answer

    client = default_client()
    return _guard(ChatResponse, lambda: answer(client, chat_req), "Chat completed successfully")


def scheduler_status(user_id: str, task_id: str | None = None, business_task_id: str | None = None
                     ) -> BaseResponse[Any]:
    """Status of a task, of every task of a business task id, or counts per status."""
    client = default_client()
    control = client.runtime.control
    if task_id:
        info = control.task(task_id)
        if info is None:
            return BaseResponse[Any](code=404, message=f"task {task_id!r} not found", data=None)
        return BaseResponse[Any](code=200, message="ok", data=[_task_dict(info)])
    tasks = control.tasks(business_task_id=business_task_id, user_id=user_id)
    return BaseResponse[Any](code=200, message="ok", data=[_task_dict(t) for t in tasks])


def _task_dict(info: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(info)
