"""Activation memory items at MemOS's import path: ``KVCacheItem`` (a DynamicCache) and its ``KVCacheRecords``."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import DynamicCache

__all__ = ["ActivationMemoryItem", "KVCacheItem", "KVCacheRecords"]

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ActivationMemoryItem(BaseModel):
    """An activation memory: an id, the activation itself and free-form metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), description="Item id.")
    memory: Any = Field(default=None, description="The activation.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata.")


class KVCacheRecords(BaseModel):
    """What a KV cache was built from (mutable, as in MemOS: schedulers fill it in after extract)."""

    text_memories: list[str] = Field(
        default_factory=list, description="The text memories turned into this activation memory."
    )
    composed_text_memory: str = Field(default="", description="The single text the cache was built from.")
    timestamp: datetime = Field(default_factory=_utc_now, description="When the cache was built (UTC).")


class KVCacheItem(ActivationMemoryItem):
    """A KV cache (``transformers.DynamicCache``) of some text, with its records."""

    memory: DynamicCache = Field(default_factory=DynamicCache, description="The key/value cache.")
    records: KVCacheRecords = Field(default_factory=KVCacheRecords, description="What it was built from.")
