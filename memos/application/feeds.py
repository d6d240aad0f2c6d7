"""Feed positions for front ends: cursors ('0:12,3:40', per partition the next offset) and their text form."""

from __future__ import annotations

import logging
from typing import Any

from schemas.errors import ValidationFailed
from streams.feed import MAX_OFFSET, Cursor, format_cursor, parse_cursor, parse_offset

__all__ = ["MAX_OFFSET", "Cursor", "check_start", "format_cursor", "parse_cursor", "parse_offset"]

logger = logging.getLogger(__name__)


def check_start(start: Any) -> None:
    """A feed's start: 'beginning', 'now', an offset or a cursor, with offsets and partitions in 0..MAX_OFFSET."""
    if isinstance(start, dict):
        field = "cursor"
        numbers = [n for item in start.items() for n in item]
    elif start in ("beginning", "now"):
        return
    else:
        field, numbers = "from", [start]
    if not all(type(n) is int and 0 <= n <= MAX_OFFSET for n in numbers):
        raise ValidationFailed(
            f"a feed starts at 'beginning', 'now', an offset or a cursor of offsets in 0..{MAX_OFFSET}, not "
            f"{str(start)[:64]!r}", field=field,
        )
