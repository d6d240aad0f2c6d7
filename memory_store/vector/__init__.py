"""Vector and keyword stores at scale: Weaviate (client v4), imported lazily when a store starts."""

from __future__ import annotations

import logging

from memory_store.vector.weaviate import WeaviateKeywordIndex, WeaviateVectorStore

__all__ = ["WeaviateKeywordIndex", "WeaviateVectorStore"]

logger = logging.getLogger(__name__)
