"""Plaintext memory items at MemOS's import path: ``TextualMemoryItem`` and its metadata.

Field names follow MemOS ``src/memos/memories/textual/item.py`` (``TextualMemoryMetadata`` plus the
tree-node fields: ``memory_type``, ``key``, ``sources``, ``background``, ...). Differences: one metadata
class carries both field sets and keeps any other key the stores return (``relativity``, ``cube_id``,
``revision``, ...); ``status`` may also be ``retired`` (a superseded memory that still resolves by id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TextualMemoryItem", "TextualMemoryMetadata", "TreeNodeTextualMemoryMetadata"]

logger = logging.getLogger(__name__)


class TextualMemoryMetadata(BaseModel):
    """Metadata of a plaintext memory; unknown keys are kept (``metadata.relativity`` etc.)."""

    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(default=None, description="User whose conversation produced the memory.")
    session_id: str | None = Field(default=None, description="Session it came from.")
    status: str | None = Field(
        default="activated", description="activated, retired (superseded) or archived."
    )
    type: str | None = Field(default=None, description="fact, event, opinion, procedure, ...")
    memory_time: str | None = Field(default=None, description="When the remembered thing happened, as given.")
    source: str | None = Field(default=None, description="conversation, file, web, system, ...")
    confidence: float | None = Field(default=None, description="Extractor confidence in [0, 1].")
    entities: list[str] | None = Field(default=None, description="Entities mentioned.")
    tags: list[str] | None = Field(default=None, description="Tags.")
    visibility: str | None = Field(default=None, description="private, public or session.")
    updated_at: str | None = Field(default=None, description="Last change (ISO 8601).")
    memory_type: str | None = Field(default=None, description="MemOS memory type (LongTermMemory, ...).")
    key: str | None = Field(default=None, description="Short title of the memory.")
    sources: list[Any] | None = Field(default=None, description="Messages and parts it was made from.")
    embedding: list[float] | None = Field(default=None, description="Embedding (empty unless asked for).")
    created_at: str | None = Field(default=None, description="Creation time (ISO 8601).")
    background: str | None = Field(default=None, description="Context summary around the memory.")


class TreeNodeTextualMemoryMetadata(TextualMemoryMetadata):
    """MemOS's tree-node metadata name; the same fields here."""


class TextualMemoryItem(BaseModel):
    """One plaintext memory: ``id``, ``memory`` (the text) and ``metadata``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, description="Memory id.")
    memory: str = Field(..., description="The memory text.")
    metadata: TextualMemoryMetadata = Field(default_factory=TextualMemoryMetadata, description="Metadata.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextualMemoryItem:
        """From the ``{id, memory, metadata, ...}`` dicts of search, get and exports.

        Other top-level keys (``ref_id``) move into the metadata.
        """
        metadata = dict(data.get("metadata") or {})
        for key, value in data.items():
            if key not in ("id", "memory", "metadata"):
                metadata.setdefault(key, value)
        item_id = str(data.get("id") or metadata.get("id") or uuid.uuid4())
        return cls(id=item_id, memory=str(data.get("memory", "")), metadata=TextualMemoryMetadata(**metadata))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return self.model_dump(mode="json")
