"""Feed positions for front ends: cursors ('0:12,3:40', per partition the next offset) and their text form."""

from __future__ import annotations

import logging

from streams.feed import Cursor, format_cursor, parse_cursor

__all__ = ["Cursor", "format_cursor", "parse_cursor"]

logger = logging.getLogger(__name__)
