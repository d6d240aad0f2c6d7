"""The web console: pages over the application layer, served by ``memos serve`` at /console."""

from __future__ import annotations

import logging

from memos.console.routes import CONSOLE_PREFIX, router

__all__ = ["CONSOLE_PREFIX", "router"]

logger = logging.getLogger(__name__)
