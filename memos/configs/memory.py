"""Memory configs at MemOS's import path; ``MemoryConfigFactory`` picks the class by ``backend``.

Other memory kinds register their config class in ``MemoryConfigFactory.backend_to_class``.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field, field_validator

from memos.configs.base import BackendConfigFactory, BaseConfig
from memos.configs.llm import LLMConfigFactory

__all__ = [
    "BaseActMemoryConfig",
    "BaseMemoryConfig",
    "KVCacheMemoryConfig",
    "MemoryConfigFactory",
    "UninitializedMemoryConfig",
]

logger = logging.getLogger(__name__)

_KV_BACKENDS = ("huggingface", "huggingface_singleton")


class BaseMemoryConfig(BaseConfig):
    """Options every memory takes."""

    cube_id: str | None = Field(default=None, description="Cube the memory belongs to.")


class UninitializedMemoryConfig(BaseMemoryConfig):
    """A memory slot left empty."""


class BaseActMemoryConfig(BaseMemoryConfig):
    """Activation (KV cache) memories."""

    memory_filename: str = Field(
        default="activation_memory.safetensors",
        description="File stem for dump/load: <stem>.safetensors (tensors) and <stem>.json (items); never pickle.",
    )


class KVCacheMemoryConfig(BaseActMemoryConfig):
    """KV caches built by a local transformers model."""

    extractor_llm: LLMConfigFactory = Field(..., description="The local model that builds the caches.")
    warm_cache_budget_mb: int = Field(default=2048, gt=0, description="Byte budget of warm prefix caches.")
    merge: str = Field(
        default="concat",
        pattern="^(concat|reposition|rebuild)$",
        description="Default get_cache merge: concat (MemOS), reposition (RoPE shifted) or rebuild (exact).",
    )

    @field_validator("extractor_llm")
    @classmethod
    def _local_model(cls, value: LLMConfigFactory) -> LLMConfigFactory:
        if value.backend not in _KV_BACKENDS:
            raise ValueError(f"kv_cache needs a local model backend {_KV_BACKENDS!r}, got {value.backend!r}")
        return value


class MemoryConfigFactory(BackendConfigFactory):
    """``{"backend": ..., "config": {...}}`` for a memory."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {
        "kv_cache": KVCacheMemoryConfig,
        "uninitialized": UninitializedMemoryConfig,
    }
