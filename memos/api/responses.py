"""MemOS response envelopes: ``{code, message, data}`` with typed ``data`` (re-exported by product_models).

Field names and defaults follow MemOS ``src/memos/api/product_models.py`` (MemTensor/MemOS
commit 98e882d2).
"""

from __future__ import annotations

import logging
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AddStatusResponse",
    "AllStatusResponse",
    "AllStatusResponseData",
    "BaseResponse",
    "ChatResponse",
    "ConfigResponse",
    "DeleteMemoryResponse",
    "GetMemoryResponse",
    "MemoryResponse",
    "SearchResponse",
    "SimpleResponse",
    "StatusResponse",
    "StatusResponseItem",
    "TaskProgress",
    "SuggestionResponse",
    "TaskSummary",
    "UserListResponse",
    "UserRegisterResponse",
    "UserResponse",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BaseResponse(BaseModel, Generic[T]):
    """Every MemOS response: a status ``code`` (200 on success), a ``message`` and the ``data``."""

    model_config = ConfigDict(extra="forbid")

    code: int = Field(default=200, description="Response status code (HTTP-like; 200 on success).")
    message: str = Field(..., description="Human-readable outcome.")
    data: T | None = Field(default=None, description="Response data.")


class SimpleResponse(BaseResponse[None]):
    """Response of an operation that returns no data."""


class ConfigResponse(BaseResponse[None]):
    """Response of the configuration endpoint."""


class MemoryResponse(BaseResponse[list[Any]]):
    """Response of memory operations such as add: ``data`` lists the memories (or task) affected."""


class SearchResponse(BaseResponse[dict[str, Any]]):
    """Response of search: ``data`` holds ``text_mem``, ``act_mem``, ``para_mem``, ``pref_mem``,
    ``tool_mem`` buckets (one entry per cube: ``{"cube_id": ..., "memories": [...]}``) and ``pref_note``."""


class ChatResponse(BaseResponse[str]):
    """Response of chat: ``data`` is the answer text."""


class GetMemoryResponse(BaseResponse[dict[str, Any]]):
    """Response of get-memory: ``data`` holds the cube's memories by kind."""


class DeleteMemoryResponse(BaseResponse[dict[str, Any]]):
    """Response of delete-memory: ``data`` says what was deleted."""


class AddStatusResponse(BaseResponse[dict[str, Any]]):
    """Response of add-status: ``data`` describes the add tasks of a cube/session."""


class UserResponse(BaseResponse[dict[str, Any]]):
    """Response of user operations."""


class UserListResponse(BaseResponse[list[Any]]):
    """Response listing users."""


class UserRegisterResponse(BaseResponse[dict[str, Any]]):
    """Response of user registration."""


class SuggestionResponse(BaseResponse[dict[str, list[str]]]):
    """Response of suggestion queries: ``{"query": [...]}``."""


class TaskProgress(BaseModel):
    """How far a task's work has come: ``done`` of ``total`` units of its current ``step``."""

    step: str = Field(..., description="Current step (an add: reading, embedding, deduplicating, done).")
    done: int = Field(..., description="Units of the step finished (an add: memories).")
    total: int = Field(..., description="Units of the step in all.")


class StatusResponseItem(BaseModel):
    """Status of one scheduler task."""

    task_id: str = Field(..., description="The id of the task.")
    status: Literal["in_progress", "completed", "waiting", "failed", "cancelled"] = Field(
        ..., description="The current status of the task."
    )
    progress: TaskProgress | None = Field(
        default=None, description="How far the task has come, where its worker reports it (large adds)."
    )


class StatusResponse(BaseResponse[list[StatusResponseItem]]):
    """Response of the scheduler task-status query."""

    message: str = "Memory get status successfully"


class TaskSummary(BaseModel):
    """Counts of tasks by status."""

    waiting: int = Field(default=0, description="Tasks waiting to run.")
    in_progress: int = Field(default=0, description="Tasks running.")
    pending: int = Field(default=0, description="Tasks fetched by workers but not yet acknowledged.")
    completed: int = Field(default=0, description="Tasks completed.")
    failed: int = Field(default=0, description="Tasks failed.")
    cancelled: int = Field(default=0, description="Tasks cancelled.")
    total: int = Field(default=0, description="All tasks counted.")


class AllStatusResponseData(BaseModel):
    """Scheduler status summary."""

    scheduler_summary: TaskSummary = Field(..., description="Tasks managed by the scheduler.")
    all_tasks_summary: TaskSummary = Field(..., description="All tracked tasks.")


class AllStatusResponse(BaseResponse[AllStatusResponseData]):
    """Response of the full scheduler status query."""

    message: str = "Scheduler status summary retrieved successfully"
