"""Activation memories: KV caches of memories that let a local model answer without re-reading them."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
