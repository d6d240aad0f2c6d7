"""Plaintext, preference and parametric memory configs (MemOS ``memos.configs.memory``), registered on import.

Importing this module adds ``naive_text``, ``general_text``, ``tree_text``, ``pref_text`` and ``lora`` to
``MemoryConfigFactory.backend_to_class`` (``memos.configs.mem_cube`` imports it). Differences from MemOS:

- ``extractor_llm`` is optional: without it memories are extracted by the offline rule-based extractor;
- ``vector_db`` / ``graph_db`` are accepted for compatibility but the stores are the server's own
  (settings ``stores.*_url``), so they are only logged, and their ``config`` (which may hold passwords)
  is never dumped;
- ``lora`` is accepted so MemOS cube files load; parametric memory is not implemented by the runtime.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from memos.configs.base import BaseConfig
from memos.configs.embedder import EmbedderConfigFactory, default_embedder
from memos.configs.llm import LLMConfigFactory
from memos.configs.memory import BaseMemoryConfig, MemoryConfigFactory

__all__ = [
    "BaseTextMemoryConfig",
    "GeneralTextMemoryConfig",
    "LoRAMemoryConfig",
    "NaiveTextMemoryConfig",
    "PreferenceTextMemoryConfig",
    "StoreConfigFactory",
    "TreeTextMemoryConfig",
]

logger = logging.getLogger(__name__)


class StoreConfigFactory(BaseConfig):
    """A MemOS ``vector_db``/``graph_db`` section: kept for compatibility, not used to pick a store."""

    backend: str = Field(..., min_length=1, description="MemOS store backend (qdrant, neo4j, ...).")
    config: dict[str, Any] = Field(
        default_factory=dict, exclude=True, repr=False, description="Backend options; never dumped."
    )


class BaseTextMemoryConfig(BaseMemoryConfig):
    """Options every plaintext memory takes."""

    memory_filename: str = Field(default="textual_memory.json", description="File name used by dump/load.")
    extractor_llm: LLMConfigFactory | None = Field(
        default=None, description="LLM that extracts memories; None: the offline rule-based extractor."
    )


class NaiveTextMemoryConfig(BaseTextMemoryConfig):
    """MemOS ``naive_text``: plaintext memories without embeddings."""


class GeneralTextMemoryConfig(BaseTextMemoryConfig):
    """MemOS ``general_text``: plaintext memories with embeddings, on the server's vector and keyword stores."""

    embedder: EmbedderConfigFactory = Field(default_factory=default_embedder, description="Embedding model.")
    vector_db: StoreConfigFactory | None = Field(
        default=None, description="(Compatibility) MemOS vector database."
    )

    @field_validator("vector_db")
    @classmethod
    def _note_ignored_store(cls, value: StoreConfigFactory | None) -> StoreConfigFactory | None:
        if value is not None:
            logger.info("cube_config_store_ignored section=vector_db backend=%r", value.backend)
        return value


class TreeTextMemoryConfig(GeneralTextMemoryConfig):
    """MemOS ``tree_text``: memories plus graph relations, on the server's graph store.

    MemOS's many tuning keys (search strategy, reorganizer, internet retriever, ...) are accepted.
    """

    model_config = ConfigDict(extra="allow")

    dispatcher_llm: LLMConfigFactory | None = Field(
        default=None, description="LLM for query planning (optional)."
    )
    graph_db: StoreConfigFactory | None = Field(
        default=None, description="(Compatibility) MemOS graph database."
    )
    reorganize: bool = Field(default=False, description="Run the background organizer (mem_organize tasks).")
    memory_size: dict[str, int] | None = Field(default=None, description="Capacity per memory type.")

    @field_validator("graph_db")
    @classmethod
    def _note_ignored_graph(cls, value: StoreConfigFactory | None) -> StoreConfigFactory | None:
        if value is not None:
            logger.info("cube_config_store_ignored section=graph_db backend=%r", value.backend)
        return value


class PreferenceTextMemoryConfig(GeneralTextMemoryConfig):
    """MemOS ``pref_text``: explicit and implicit preferences; MemOS's extra pipeline keys are accepted."""

    model_config = ConfigDict(extra="allow")

    memory_filename: str = Field(default="preference_memory.json", description="File name used by dump/load.")


class LoRAMemoryConfig(BaseMemoryConfig):
    """MemOS ``lora`` parametric memory: accepted so MemOS cube files load; not implemented."""

    memory_filename: str = Field(
        default="parametric_memory.adapter", description="File name used by dump/load."
    )
    extractor_llm: LLMConfigFactory | None = Field(default=None, description="Base model of the adapter.")


MemoryConfigFactory.backend_to_class.update(
    {
        "naive_text": NaiveTextMemoryConfig,
        "general_text": GeneralTextMemoryConfig,
        "tree_text": TreeTextMemoryConfig,
        "pref_text": PreferenceTextMemoryConfig,
        "lora": LoRAMemoryConfig,
    }
)
