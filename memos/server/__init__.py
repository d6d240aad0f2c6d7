"""The HTTP server (MemOS routes, feed, metrics) and the MCP server, on top of the memory service."""

from __future__ import annotations

import logging

from memos.server.app import BackgroundServer, create_app
from memos.server.auth import Caller, KeyAuthenticator, is_loopback
from memos.server.routes_product import ChatFn

__all__ = ["BackgroundServer", "Caller", "ChatFn", "KeyAuthenticator", "create_app", "is_loopback"]

logger = logging.getLogger(__name__)
