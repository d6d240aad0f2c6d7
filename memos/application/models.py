"""Typed requests and results of the memory use cases (front ends translate their wire formats to these)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos.application.limits import (
    MAX_MEMORY_IDS,
    MAX_MESSAGES,
    MAX_PAGE,
    MAX_QUERY_CHARS,
    MAX_TASK_ID_CHARS,
    MAX_TOP_K,
)
from schemas.errors import ValidationFailed

__all__ = [
    "AddRequest",
    "CubeAdd",
    "DeleteRequest",
    "MemoriesQuery",
    "Origin",
    "SearchRequest",
    "build",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def build(model: type[M], **values: Any) -> M:
    """A typed request; pydantic's errors become ValidationFailed naming the first bad field."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        raise ValidationFailed(f"{where}: {first.get('msg', 'invalid')}", field=where) from None


Origin = Literal["remote", "local"]
"""Where a request came from: 'remote' (HTTP, MCP: no local files) or 'local' (in-process API, MOS)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddRequest(_Request):
    """Record messages for each cube (``cube_ids`` empty: the user's default cube, its own id)."""

    user_id: str
    cube_ids: tuple[str, ...] = ()
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    session_id: str = Field(default="default_session", min_length=1, max_length=256)
    mode: Literal["fast", "fine"] = "fine"
    async_mode: Literal["sync", "async"] = "sync"
    info: dict[str, Any] = Field(default_factory=dict)
    custom_tags: tuple[str, ...] = ()
    task_id: str | None = Field(default=None, min_length=1, max_length=MAX_TASK_ID_CHARS)
    """The caller's own id for the add; it becomes the business task id of the add's tasks."""
    trace_id: str | None = Field(default=None, max_length=128)
    origin: Origin = "remote"
    auto_create: bool | None = None
    """Create unknown cubes for the user (None: the ``auto_create_cubes`` setting)."""


@dataclass(frozen=True, slots=True)
class CubeAdd:
    """What an add did in one cube: its task, the status reached, and (sync) the memories it added."""

    cube_id: str
    task_id: str
    status: str
    error: str | None = None
    memories: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The legacy dict shape (``MemoryService.add``)."""
        return {"cube_id": self.cube_id, "task_id": self.task_id, "status": self.status, "error": self.error,
                "memories": self.memories}


class SearchRequest(_Request):
    """Search the cubes (empty: the user's default cube); bounds are the door's."""

    user_id: str
    cube_ids: tuple[str, ...] = ()
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    pref_top_k: int = Field(default=6, ge=0, le=MAX_TOP_K)
    tool_mem_top_k: int = Field(default=6, ge=0, le=MAX_TOP_K)
    skill_mem_top_k: int = Field(default=3, ge=0, le=MAX_TOP_K)
    options: dict[str, Any] = Field(default_factory=dict)
    """Other ``processors.retrieval.SearchQuery`` fields (mode, session_id, filter, dedup, ...)."""

    @classmethod
    def from_memos(cls, user_id: str, cube_ids: Sequence[str], query: str, fields: Mapping[str, Any]
                   ) -> SearchRequest:
        """From a MemOS search request's fields: the ones search knows are kept, None values dropped."""
        from processors.retrieval import SearchQuery

        counts = {k: fields[k] for k in _COUNTS if fields.get(k) is not None}
        skip = {"query", "user_id", "readable_cube_ids", "mem_cube_id", *_COUNTS}
        options = {k: v for k, v in fields.items()
                   if k in SearchQuery.model_fields and k not in skip and v is not None}
        return build(cls, user_id=user_id, cube_ids=tuple(cube_ids), query=query, options=options, **counts)


_COUNTS = ("top_k", "pref_top_k", "tool_mem_top_k", "skill_mem_top_k")


class MemoriesQuery(_Request):
    """Memories of one cube by bucket, optionally filtered and paged (MemOS get_memory)."""

    user_id: str
    cube_id: str
    include_preference: bool = True
    include_tool_memory: bool = True
    include_skill_memory: bool = True
    filter: dict[str, Any] | None = None
    page: int | None = Field(default=None, ge=1, le=MAX_PAGE)
    page_size: int | None = Field(default=None, ge=1, le=MAX_TOP_K)


class DeleteRequest(_Request):
    """Retire memories inside the named cubes: by id, by file id, by filter (any combination)."""

    user_id: str
    cube_ids: tuple[str, ...] = Field(min_length=1)
    memory_ids: tuple[str, ...] = Field(default=(), max_length=MAX_MEMORY_IDS)
    file_ids: tuple[str, ...] = Field(default=(), max_length=MAX_MEMORY_IDS)
    filter: dict[str, Any] | None = None
