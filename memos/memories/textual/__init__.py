"""Plaintext memories: items (``item``) and a cube's view over the memory service (``cube_memory``)."""

from __future__ import annotations

import logging

from memos.memories.textual.item import (
    TextualMemoryItem,
    TextualMemoryMetadata,
    TreeNodeTextualMemoryMetadata,
)

__all__ = ["TextualMemoryItem", "TextualMemoryMetadata", "TreeNodeTextualMemoryMetadata"]

logger = logging.getLogger(__name__)
