"""Choose an EventLog adapter by URL scheme; adapter modules are imported only when chosen."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.errors import ConfigError
from streams.log.base import EventLog

__all__ = ["EVENT_LOGS", "event_log_from_url"]

logger = logging.getLogger(__name__)

EVENT_LOGS: dict[str, str] = {
    "sqlite": "streams.log.local.log:LocalEventLog",
    "local": "streams.log.local.log:LocalEventLog",
    "kafka": "streams.log.kafka.log:KafkaEventLog",
}
"""URL scheme -> "module:Class" of the adapter."""

_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _load(target: str) -> type[EventLog]:
    module_name, _, attr = target.partition(":")
    cls: type[EventLog] = getattr(importlib.import_module(module_name), attr)
    return cls


def _local_path(url: str, scheme: str, netloc: str, raw_path: str) -> Path:
    if netloc not in ("", "localhost"):
        raise ConfigError(f"event log URL {url!r} has a host {netloc!r}; use {scheme}:///absolute/path")
    path = unquote(raw_path)
    if not path or path == "/":
        raise ConfigError(f"event log URL {url!r} names no file; use {scheme}:///absolute/path")
    resolved = Path("/" + path.lstrip("/"))
    if scheme == "local" and resolved.suffix not in _DB_SUFFIXES:
        resolved = resolved / "log.db"
    return resolved


def event_log_from_url(url: str, **options: Any) -> EventLog:
    """Build an (unstarted) event log from a URL; ``options`` go to the adapter's constructor.

    ``sqlite:///abs/path.db`` -> LocalEventLog on that file; ``local:///abs/dir`` -> LocalEventLog on
    ``dir/log.db`` (or on the file itself when the path ends in .db/.sqlite/.sqlite3);
    ``kafka://host:port[,host:port]`` -> KafkaEventLog. Unknown schemes raise ConfigError.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in EVENT_LOGS:
        raise ConfigError(f"unknown event log scheme {scheme!r} in {url!r}; known: {sorted(EVENT_LOGS)}")
    cls = _load(EVENT_LOGS[scheme])
    if scheme == "kafka":
        if not parts.netloc:
            raise ConfigError(f"event log URL {url!r} names no broker; use kafka://host:port[,host:port]")
        return cls(parts.netloc, **options)  # type: ignore[call-arg]
    return cls(_local_path(url, scheme, parts.netloc, parts.path), **options)  # type: ignore[call-arg]
