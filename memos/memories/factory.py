"""``MemoryFactory.from_config``: builds the memory a ``MemoryConfigFactory`` names (lazy imports)."""

from __future__ import annotations

import importlib
import logging
from typing import Any, ClassVar

from memos.configs.memory import MemoryConfigFactory
from schemas.errors import ConfigError

__all__ = ["MemoryFactory"]

logger = logging.getLogger(__name__)


class MemoryFactory:
    """Maps a memory backend to its class as ``"module:Class"``, imported on first use."""

    backend_to_class: ClassVar[dict[str, str]] = {
        "kv_cache": "memos.memories.activation.kv:KVCacheMemory",
    }

    @classmethod
    def from_config(cls, config_factory: MemoryConfigFactory, **dependencies: Any) -> Any:
        """The memory for ``config_factory``; ``dependencies`` (e.g. a shared ``store``) go to its constructor.

        Raises ConfigError for a backend with no memory class.
        """
        target = cls.backend_to_class.get(config_factory.backend)
        if target is None:
            raise ConfigError(
                f"no memory class for backend {config_factory.backend!r}; known: {sorted(cls.backend_to_class)!r}"
            )
        module_name, _, class_name = target.partition(":")
        memory_class = getattr(importlib.import_module(module_name), class_name)
        return memory_class(config_factory.config, **dependencies)
