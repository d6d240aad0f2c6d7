"""MemOS-compatible memories (``memos.memories.<kind>``), built by ``MemoryFactory.from_config``."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
