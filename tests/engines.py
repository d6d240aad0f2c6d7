"""How tests find real engines: MEMOS_TEST_<ENGINE>_URL, skipped when unset, failed when required."""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

import pytest

__all__ = ["ENGINES", "engine_url", "required_engines"]

logger = logging.getLogger(__name__)

ENGINES = ("kafka", "falkordb", "bolt", "neo4j", "weaviate", "tansu")
"""Engine legs: kafka (noida-db here), falkordb (native port), bolt (FalkorDB's Bolt port, for the
Neo4j driver smoke suite), neo4j (a real Neo4j), weaviate, tansu (second, stateless Kafka leg)."""


def required_engines() -> set[str]:
    """Engines named in MEMOS_REQUIRE_ENGINES (comma separated): their skips become failures."""
    raw = os.environ.get("MEMOS_REQUIRE_ENGINES", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port
    if port is None:
        return True
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def engine_url(name: str) -> str:
    """URL of an engine from MEMOS_TEST_<NAME>_URL; skip (or fail, when required) if unset or down."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {ENGINES}")
    url = os.environ.get(f"MEMOS_TEST_{name.upper()}_URL", "")
    reason = ""
    if not url:
        reason = f"MEMOS_TEST_{name.upper()}_URL is not set"
    elif not _reachable(url):
        reason = f"{name} at {url!r} is not reachable"
    if reason:
        if name in required_engines():
            pytest.fail(f"engine leg {name!r} is required (MEMOS_REQUIRE_ENGINES) but {reason}")
        pytest.skip(f"engine leg {name!r} skipped: {reason}")
    return url
