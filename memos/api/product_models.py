"""MemOS-compatible request and response models (``memos.api.product_models``).

Field names, types and defaults follow MemOS ``src/memos/api/product_models.py``: MemTensor/MemOS commit
98e882d2 (the one with ``include_skill_memory``), plus the later revision of that file that adds
``neighbor_discovery``, ``manager_user_id``/``project_id`` and sets ``relativity`` to 0.45 (98e882d2
has 0.57 while its description says 0.3). Deliberate differences, each safer than MemOS:

- requests reject unknown fields (MemOS ignores them, so a typo such as ``readble_cube_ids`` silently
  searched nothing);
- messages are checked for structure and errors name the place (``messages.2.role``);
- an add with nothing to add is an error, not an empty success;
- a delete must name the cubes it is scoped to and what to delete (MemOS lets ``writable_cube_ids``
  be None).
Unknown cube ids are rejected by the runtime, not here.
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from memos.api.messages import MessageDict, MessageList, MessagesType
from memos.api.responses import (
    AddStatusResponse,
    AllStatusResponse,
    AllStatusResponseData,
    BaseResponse,
    ChatResponse,
    ConfigResponse,
    DeleteMemoryResponse,
    GetMemoryResponse,
    MemoryResponse,
    SearchResponse,
    SimpleResponse,
    StatusResponse,
    StatusResponseItem,
    SuggestionResponse,
    TaskSummary,
    UserListResponse,
    UserRegisterResponse,
    UserResponse,
)
from memos.application.ids import ID_GRAMMAR, MAX_ID_CHARS
from memos.application.limits import MAX_PAGE, MAX_QUERY_CHARS, MAX_TOP_K

__all__ = [
    "APIADDRequest",
    "APIChatCompleteRequest",
    "APIFeedbackRequest",
    "APISearchRequest",
    "AddStatusRequest",
    "AddStatusResponse",
    "AllStatusResponse",
    "AllStatusResponseData",
    "BaseRequest",
    "BaseResponse",
    "ChatCompleteRequest",
    "ChatRequest",
    "ChatResponse",
    "ConfigResponse",
    "CubeId",
    "DeleteMemoryRequest",
    "DeleteMemoryResponse",
    "GetMemoryRequest",
    "GetMemoryResponse",
    "MemoryResponse",
    "MessageDict",
    "MessageList",
    "MessagesType",
    "PermissionDict",
    "SearchMode",
    "SearchResponse",
    "SimpleResponse",
    "StatusRequest",
    "StatusResponse",
    "StatusResponseItem",
    "SuggestionRequest",
    "SuggestionResponse",
    "TaskSummary",
    "UserListResponse",
    "UserRegisterRequest",
    "UserRegisterResponse",
    "UserResponse",
]

logger = logging.getLogger(__name__)

CubeId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, description=f"A memory cube id: {ID_GRAMMAR}.")]
"""A cube id (its grammar, existence and access are checked by the application layer)."""

_FILTER_DOC = 'Metadata filter, e.g. {"and": [{"id": "uuid-xxx"}, {"created_at": {"gt": "2024-01-01"}}]}.'


def _field_error(title: str, field: str, value: Any, message: str) -> ValidationError:
    """A ValidationError located at ``field`` (model validators otherwise report at the top level)."""
    error = PydanticCustomError("invalid_request", message)
    return ValidationError.from_exception_data(title, [{"type": error, "loc": (field,), "input": value}])


class SearchMode(StrEnum):
    """Search mode (MemOS ``memos.types.SearchMode``)."""

    FAST = "fast"
    FINE = "fine"
    MIXTURE = "mixture"


class PermissionDict(TypedDict, total=False):
    """(Internal, deprecated in MemOS) per-cube permissions of a request."""

    permissions: list[Literal["read", "write", "delete", "execute"]]
    mem_cube_id: str


class BaseRequest(BaseModel):
    """Base of all requests: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class UserRegisterRequest(BaseRequest):
    """Register a user (optionally with a first cube)."""

    user_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, description="User ID.")
    mem_cube_id: CubeId | None = Field(default=None, description="Cube ID to create for the user.")
    user_name: str | None = Field(default=None, description="User name.")
    interests: str | None = Field(default=None, description="User interests.")


class APIADDRequest(BaseRequest):
    """Add memories to one or more cubes (``POST /product/add``)."""

    user_id: str | None = Field(default=None, description="User ID.")
    session_id: str | None = Field(
        default=None, description="Session ID; a default session is used if absent."
    )
    task_id: str | None = Field(default=None, description="Caller's task ID for monitoring async adds.")
    manager_user_id: str | None = Field(default=None, description="Manager user ID.")
    project_id: str | None = Field(default=None, description="Project ID.")
    writable_cube_ids: list[CubeId] | None = Field(default=None, description="Cubes to write to.")
    async_mode: Literal["async", "sync"] = Field(
        default="async", description="'async' enqueues and returns a task id; 'sync' returns after the add."
    )
    mode: Literal["fast", "fine"] | None = Field(
        default=None, description="Add pipeline for sync adds: 'fast' (chunks) or 'fine' (extraction)."
    )
    custom_tags: list[str] | None = Field(
        default=None, description="Tags for this add, usable as search filters."
    )
    info: dict[str, Any] | None = Field(
        default=None, description="Free-form metadata, usable as search filters."
    )
    messages: MessagesType | None = Field(
        default=None, description="Messages to remember (OpenAI chat format), raw input items, or a string."
    )
    chat_history: MessageList | None = Field(default=None, description="Earlier messages, used as context.")
    is_feedback: bool = Field(default=False, description="Whether this request is user feedback.")
    mem_cube_id: CubeId | None = Field(
        default=None, description="(Deprecated) One cube; use writable_cube_ids."
    )
    memory_content: str | None = Field(default=None, description="(Deprecated) Plain text to remember.")
    doc_path: str | None = Field(default=None, description="(Deprecated) Path of a document to remember.")
    source: str | None = Field(default=None, description="(Deprecated) Source tag; use info['source_type'].")
    operation: list[PermissionDict] | None = Field(
        default=None, description="(Internal, deprecated) Permissions."
    )

    @model_validator(mode="after")
    def _convert_deprecated_fields(self) -> Self:
        """Map MemOS's deprecated fields onto the current ones, as MemOS does."""
        if self.async_mode == "async" and self.mode is not None:
            # debug, not warning: clients commonly send both, and a line per add flooded the log under load
            logger.debug("add_request_mode_ignored mode=%r async_mode='async'", self.mode)
            self.mode = None
        if self.mem_cube_id and not self.writable_cube_ids:
            self.writable_cube_ids = [self.mem_cube_id]
        extra_items: list[MessageDict] = []
        if self.memory_content:
            extra_items.append({"type": "text", "text": self.memory_content})
        if self.doc_path:
            extra_items.append({"type": "file", "file": {"path": self.doc_path}})
        if extra_items:
            if self.messages is None:
                self.messages = []
            elif isinstance(self.messages, str):
                self.messages = [{"type": "text", "text": self.messages}]
            self.messages = [*self.messages, *extra_items]
        if self.source:
            self.info = {**(self.info or {})}
            self.info.setdefault("source", self.source)
        if not self.messages:
            raise _field_error(
                "APIADDRequest",
                "messages",
                self.messages,
                "nothing to add: give 'messages' (or the deprecated 'memory_content'/'doc_path')",
            )
        return self


class APISearchRequest(BaseRequest):
    """Search memories across readable cubes (``POST /product/search``)."""

    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="Search query.")
    user_id: str = Field(..., description="User ID.")
    readable_cube_ids: list[CubeId] | None = Field(default=None, description="Cubes to search.")
    mode: SearchMode = Field(default=SearchMode.FAST, description="Search mode: fast, fine or mixture.")
    session_id: str | None = Field(default=None, description="Session used to weight results (not a filter).")
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K, description="Number of text memories to return.")
    relativity: float = Field(
        default=0.45,
        ge=0,
        description="Only memories with relativity >= this are returned; 0 disables the threshold.",
    )
    dedup: Literal["no", "sim", "mmr"] | None = Field(
        default="mmr", description="Deduplication of text memories."
    )
    pref_top_k: int = Field(default=6, ge=0, le=MAX_TOP_K, description="Number of preference memories to return.")
    include_preference: bool = Field(default=True, description="Whether to return preference memories.")
    search_tool_memory: bool = Field(default=True, description="Whether to return tool memories.")
    tool_mem_top_k: int = Field(default=6, ge=0, le=MAX_TOP_K, description="Number of tool memories to return.")
    include_skill_memory: bool = Field(default=True, description="Whether to return skill memories.")
    skill_mem_top_k: int = Field(default=3, ge=0, le=MAX_TOP_K, description="Number of skill memories to return.")
    filter: dict[str, Any] | None = Field(default=None, description=_FILTER_DOC)
    internet_search: bool = Field(default=False, description="Whether to also search the internet.")
    threshold: float | None = Field(default=None, description="(Internal) Similarity threshold.")
    search_memory_type: str = Field(default="All", description="(Internal) Memory type to search, or 'All'.")
    chat_history: MessageList | None = Field(default=None, description="Earlier messages, used as context.")
    mem_cube_id: CubeId | None = Field(
        default=None, description="(Deprecated) One cube; use readable_cube_ids."
    )
    moscube: bool = Field(default=False, description="(Deprecated) Legacy MemOSCube path.")
    operation: list[PermissionDict] | None = Field(
        default=None, description="(Internal, deprecated) Permissions."
    )
    source: str | None = Field(default=None, description="Source of the query (plugins).")
    neighbor_discovery: bool = Field(default=False, description="Whether to also recall neighbouring chunks.")

    @model_validator(mode="after")
    def _convert_deprecated_fields(self) -> Self:
        if self.mem_cube_id is not None and not self.readable_cube_ids:
            self.readable_cube_ids = [self.mem_cube_id]
        return self


class _ChatFields(BaseRequest):
    """Fields shared by MemOS's chat requests."""

    user_id: str = Field(..., description="User ID.")
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="Chat query.")
    readable_cube_ids: list[CubeId] | None = Field(default=None, description="Cubes to read memories from.")
    writable_cube_ids: list[CubeId] | None = Field(default=None, description="Cubes to add the dialogue to.")
    history: MessageList | None = Field(default=None, description="Chat history.")
    mode: SearchMode = Field(default=SearchMode.FAST, description="Search mode: fast, fine or mixture.")
    system_prompt: str | None = Field(default=None, description="Base system prompt.")
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K, description="Number of memories to retrieve.")
    session_id: str | None = Field(default=None, description="Session ID.")
    include_preference: bool = Field(default=True, description="Whether to use preference memories.")
    pref_top_k: int = Field(default=6, ge=0, le=MAX_TOP_K, description="Number of preference memories.")
    model_name_or_path: str | None = Field(default=None, description="Chat model to use.")
    max_tokens: int | None = Field(default=None, ge=1, description="Max tokens to generate.")
    temperature: float | None = Field(default=None, ge=0, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling parameter.")
    add_message_on_answer: bool = Field(
        default=True, description="Add the dialogue to memory after answering."
    )
    filter: dict[str, Any] | None = Field(default=None, description=_FILTER_DOC)
    internet_search: bool = Field(default=False, description="Whether to use internet search.")
    threshold: float = Field(default=0.5, description="Threshold for filtering references.")
    moscube: bool = Field(default=False, description="(Deprecated) Legacy MemOSCube pipeline.")
    mem_cube_id: CubeId | None = Field(
        default=None, description="(Deprecated) One cube; use readable/writable ids."
    )

    @model_validator(mode="after")
    def _convert_deprecated_fields(self) -> Self:
        if self.mem_cube_id is not None:
            if not self.readable_cube_ids:
                self.readable_cube_ids = [self.mem_cube_id]
            if not self.writable_cube_ids:
                self.writable_cube_ids = [self.mem_cube_id]
        return self


class ChatRequest(_ChatFields):
    """Chat with memories (``POST /product/chat``)."""


class APIChatCompleteRequest(_ChatFields):
    """Chat with memories, non-streaming (``POST /product/chat/complete``)."""

    manager_user_id: str | None = Field(default=None, description="Manager user ID.")
    project_id: str | None = Field(default=None, description="Project ID.")
    relativity: float = Field(default=0.45, ge=0, description="Relevance threshold for recalled memories.")


class ChatCompleteRequest(_ChatFields):
    """(Deprecated in MemOS) chat completion; use APIChatCompleteRequest."""

    base_prompt: str | None = Field(default=None, description="(Deprecated) Alias of system_prompt.")


class APIFeedbackRequest(BaseRequest):
    """Feedback on an answer, turned into memory corrections."""

    user_id: str = Field(..., description="User ID.")
    session_id: str | None = Field(default="default_session", description="Session ID.")
    task_id: str | None = Field(default=None, description="Caller's task ID.")
    history: MessageList | None = Field(..., description="Chat history the feedback is about.")
    retrieved_memory_ids: list[str] | None = Field(
        default=None, description="Memories retrieved at the last turn."
    )
    feedback_content: str | None = Field(..., description="The feedback.")
    feedback_time: str | None = Field(default=None, description="When the feedback was given.")
    writable_cube_ids: list[CubeId] | None = Field(default=None, description="Cubes to correct.")
    async_mode: Literal["sync", "async"] = Field(default="async", description="sync or async processing.")
    corrected_answer: bool = Field(default=False, description="Whether to return a corrected answer.")
    info: dict[str, Any] | None = Field(default=None, description="Free-form metadata.")
    mem_cube_id: CubeId | None = Field(default=None, description="(Deprecated) One cube.")


class AddStatusRequest(BaseRequest):
    """Status of the adds of a cube (and session)."""

    mem_cube_id: CubeId = Field(..., description="Cube ID.")
    user_id: str | None = Field(default=None, description="User ID.")
    session_id: str | None = Field(default=None, description="Session ID.")


class GetMemoryRequest(BaseRequest):
    """Export the memories of one cube (``POST /product/get_memory``)."""

    mem_cube_id: CubeId = Field(..., description="Cube ID.")
    user_id: str | None = Field(default=None, description="User ID.")
    include_preference: bool = Field(default=True, description="Whether to return preference memories.")
    include_tool_memory: bool = Field(default=True, description="Whether to return tool memories.")
    include_skill_memory: bool = Field(default=True, description="Whether to return skill memories.")
    filter: dict[str, Any] | None = Field(default=None, description=_FILTER_DOC)
    page: int | None = Field(default=None, ge=1, le=MAX_PAGE, description="Page number from 1; None exports everything.")
    page_size: int | None = Field(default=None, ge=1, le=MAX_TOP_K, description="Items per page; None exports everything.")


class DeleteMemoryRequest(BaseRequest):
    """Delete memories, always scoped to the named cubes (``POST /product/delete_memory``).

    Unlike MemOS, ``writable_cube_ids`` is required and at least one of ``memory_ids``, ``file_ids``
    or a non-empty ``filter`` must say what to delete.
    """

    writable_cube_ids: list[CubeId] = Field(..., min_length=1, description="Cubes the delete is scoped to.")
    user_id: str | None = Field(default=None, description="User asking for the delete.")
    memory_ids: list[str] | None = Field(default=None, description="Memory IDs to delete.")
    file_ids: list[str] | None = Field(default=None, description="Delete memories made from these files.")
    filter: dict[str, Any] | None = Field(default=None, description=_FILTER_DOC)

    @model_validator(mode="after")
    def _require_selector(self) -> Self:
        if not (self.memory_ids or self.file_ids or self.filter):
            raise _field_error(
                "DeleteMemoryRequest",
                "memory_ids",
                self.memory_ids,
                "say what to delete: give 'memory_ids', 'file_ids' or a non-empty 'filter'",
            )
        return self


class SuggestionRequest(BaseRequest):
    """Suggested follow-up queries."""

    user_id: str = Field(..., description="User ID.")
    mem_cube_id: CubeId = Field(..., description="Cube ID.")
    language: Literal["zh", "en"] = Field(default="zh", description="Language of the suggestions.")
    message: MessagesType | None = Field(default=None, description="Recent messages.")


class StatusRequest(BaseRequest):
    """Status of a user's scheduler tasks (or of one task)."""

    user_id: str = Field(..., description="User ID.")
    task_id: str | None = Field(default=None, description="One task to query.")
