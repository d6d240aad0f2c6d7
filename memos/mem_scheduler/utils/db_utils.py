"""Time helper of the scheduler (MemOS ``memos.mem_scheduler.utils.db_utils``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

__all__ = ["get_utc_now"]

logger = logging.getLogger(__name__)


def get_utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)
