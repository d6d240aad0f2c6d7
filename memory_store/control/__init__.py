"""The control store: its port (``base``) and adapters (``sqlite`` embedded, ``falkordb`` server), by URL scheme."""

from __future__ import annotations

import logging

from memory_store.control.base import (
    Access,
    ControlStore,
    CubeAccess,
    CubeInfo,
    KeyInfo,
    ShareInfo,
    TaskInfo,
    UserInfo,
    hash_api_key,
    verify_api_key,
)

__all__ = [
    "Access",
    "ControlStore",
    "CubeAccess",
    "CubeInfo",
    "KeyInfo",
    "ShareInfo",
    "TaskInfo",
    "UserInfo",
    "hash_api_key",
    "verify_api_key",
]

logger = logging.getLogger(__name__)
