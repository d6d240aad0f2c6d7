"""Pick a projection or control store adapter by URL scheme; adapter modules are imported on first use."""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlsplit

from memory_store.base import GraphStore, KeywordIndex, VectorStore
from memory_store.control.base import ControlStore
from schemas.errors import ConfigError

__all__ = [
    "CONTROL_STORES",
    "GRAPH_STORES",
    "KEYWORD_INDEXES",
    "VECTOR_STORES",
    "control_store_from_url",
    "graph_store_from_url",
    "keyword_index_from_url",
    "vector_store_from_url",
]

logger = logging.getLogger(__name__)

_WEAVIATE_VECTOR = "memory_store.vector.weaviate:WeaviateVectorStore"
_WEAVIATE_KEYWORD = "memory_store.vector.weaviate:WeaviateKeywordIndex"

GRAPH_STORES: dict[str, str] = {
    "sqlite": "memory_store.embedded.graph:EmbeddedGraphStore",
    "embedded": "memory_store.embedded.graph:EmbeddedGraphStore",
    "falkordb": "memory_store.graph.falkordb:FalkorDBGraphStore",
    "neo4j": "memory_store.graph.neo4j:Neo4jGraphStore",
    "neo4j+s": "memory_store.graph.neo4j:Neo4jGraphStore",
    "neo4j+ssc": "memory_store.graph.neo4j:Neo4jGraphStore",
    "bolt": "memory_store.graph.neo4j:Neo4jGraphStore",
    "bolt+s": "memory_store.graph.neo4j:Neo4jGraphStore",
    "bolt+ssc": "memory_store.graph.neo4j:Neo4jGraphStore",
}
"""URL scheme -> "module:Class" of GraphStore adapters."""

VECTOR_STORES: dict[str, str] = {
    "sqlite": "memory_store.embedded.vector:EmbeddedVectorStore",
    "embedded": "memory_store.embedded.vector:EmbeddedVectorStore",
    "weaviate+http": _WEAVIATE_VECTOR,
    "weaviate+https": _WEAVIATE_VECTOR,
    "http": _WEAVIATE_VECTOR,
    "https": _WEAVIATE_VECTOR,
}
"""URL scheme -> "module:Class" of VectorStore adapters."""

KEYWORD_INDEXES: dict[str, str] = {
    "sqlite": "memory_store.embedded.keyword:EmbeddedKeywordIndex",
    "embedded": "memory_store.embedded.keyword:EmbeddedKeywordIndex",
    "tantivy": "memory_store.embedded.keyword_tantivy:TantivyKeywordIndex",
    "weaviate+http": _WEAVIATE_KEYWORD,
    "weaviate+https": _WEAVIATE_KEYWORD,
    "http": _WEAVIATE_KEYWORD,
    "https": _WEAVIATE_KEYWORD,
}
"""URL scheme -> "module:Class" of KeywordIndex adapters."""


CONTROL_STORES: dict[str, str] = {
    "sqlite": "memory_store.control.sqlite:SQLiteControlStore",
    "embedded": "memory_store.control.sqlite:SQLiteControlStore",
    "falkordb": "memory_store.control.falkordb:FalkorDBControlStore",
    "falkor": "memory_store.control.falkordb:FalkorDBControlStore",
    "redis": "memory_store.control.falkordb:FalkorDBControlStore",
}
"""URL scheme -> "module:Class" of ControlStore adapters."""


def _load(target: str, url: str) -> type[Any]:
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"store adapter {target!r} for {url!r} cannot be imported: {exc}") from exc
    try:
        cls: type[Any] = getattr(module, class_name)
    except AttributeError as exc:
        raise ConfigError(f"store adapter {target!r} for {url!r} does not exist") from exc
    return cls


def _build(url: str, table: dict[str, str], what: str, opts: dict[str, Any]) -> object:
    scheme = urlsplit(url).scheme.lower()
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(table))
        raise ConfigError(f"unknown {what} URL scheme in {url!r}; known: {known}")
    try:
        store: object = _load(target, url)(url, **opts)
    except TypeError as exc:
        raise ConfigError(f"bad options for {target!r} ({url!r}): {exc}") from exc
    logger.debug("store selected kind=%s scheme=%s adapter=%s", what, scheme, target)
    return store


def _wrong(store: object, port: str) -> ConfigError:
    return ConfigError(f"{type(store).__module__}:{type(store).__name__} is not a {port}")


def graph_store_from_url(url: str, **opts: Any) -> GraphStore:
    """A GraphStore for ``url`` (sqlite:///abs.db, falkordb://, neo4j://, bolt://), not started.

    The adapter class is imported now and called as ``cls(url, **opts)``. Raises ConfigError for an
    unknown scheme or an adapter that cannot be imported.
    """
    store = _build(url, GRAPH_STORES, "graph store", opts)
    if not isinstance(store, GraphStore):
        raise _wrong(store, "GraphStore")
    return store


def vector_store_from_url(url: str, **opts: Any) -> VectorStore:
    """A VectorStore for ``url`` (sqlite:///abs.db, weaviate+http://, http(s)://), not started."""
    store = _build(url, VECTOR_STORES, "vector store", opts)
    if not isinstance(store, VectorStore):
        raise _wrong(store, "VectorStore")
    return store


def keyword_index_from_url(url: str, **opts: Any) -> KeywordIndex:
    """A KeywordIndex for ``url`` (sqlite:///abs.db, weaviate+http://, http(s)://), not started."""
    store = _build(url, KEYWORD_INDEXES, "keyword index", opts)
    if not isinstance(store, KeywordIndex):
        raise _wrong(store, "KeywordIndex")
    return store


def control_store_from_url(url: str, **opts: Any) -> ControlStore:
    """A ControlStore for ``url`` (sqlite:///abs/control.db, falkordb://host:port[/namespace]), not started."""
    store = _build(url, CONTROL_STORES, "control store", opts)
    if not isinstance(store, ControlStore):
        raise _wrong(store, "ControlStore")
    return store
