"""MemOS-compatible memory scheduler: schedule messages, task labels and their helpers."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
