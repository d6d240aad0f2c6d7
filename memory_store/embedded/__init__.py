"""Embedded projection stores: graph, vector and keyword in one SQLite file, no server needed."""

from __future__ import annotations

import logging

from memory_store.embedded.db import EmbeddedDatabase, EmbeddedProjection, sqlite_path
from memory_store.embedded.graph import EmbeddedGraphStore
from memory_store.embedded.keyword import EmbeddedKeywordIndex
from memory_store.embedded.vector import EmbeddedVectorStore

__all__ = [
    "EmbeddedDatabase",
    "EmbeddedGraphStore",
    "EmbeddedKeywordIndex",
    "EmbeddedProjection",
    "EmbeddedVectorStore",
    "sqlite_path",
]

logger = logging.getLogger(__name__)
