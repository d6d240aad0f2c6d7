"""Scheduler helpers at MemOS's import paths: ``db_utils.get_utc_now``, ``misc_utils.parse_yaml``."""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger(__name__)
