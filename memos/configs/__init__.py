"""MemOS-compatible configs (``memos.configs.<area>``): pydantic models with backend factories."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
