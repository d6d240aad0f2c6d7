"""MemOS's memory OS object (``memos.mem_os.main.MOS``) on the event-sourced runtime."""

from __future__ import annotations

import logging

from memos.mem_os.main import MOS

__all__ = ["MOS"]

logger = logging.getLogger(__name__)
