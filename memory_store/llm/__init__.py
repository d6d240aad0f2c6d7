"""Chat models chosen by URL scheme: openai+http(s):// / openai:// endpoints, huggingface:///path local models."""

from __future__ import annotations

import importlib
import logging
import urllib.parse

from memory_store.llm.base import ChatCompletion, ChatModel
from schemas.errors import ConfigError

__all__ = ["CHAT_MODELS", "ChatCompletion", "ChatModel", "chat_model_from_url"]

logger = logging.getLogger(__name__)

CHAT_MODELS: dict[str, str] = {
    "openai": "memory_store.llm.openai:OpenAIChatModel",
    "openai+http": "memory_store.llm.openai:OpenAIChatModel",
    "openai+https": "memory_store.llm.openai:OpenAIChatModel",
    "huggingface": "memory_store.llm.huggingface:HuggingFaceChatModel",
    "hf": "memory_store.llm.huggingface:HuggingFaceChatModel",
    "tiny": "memory_store.llm.huggingface:HuggingFaceChatModel",
    "bundled": "memory_store.llm.huggingface:HuggingFaceChatModel",
}
"""URL scheme -> "module:Class"; the module (and torch, for local models) is imported on first use."""


def chat_model_from_url(url: str, *, api_key: str | None = None) -> ChatModel:
    """Build the chat model a URL names, through the class's ``from_url``. Raises ConfigError.

    ``openai+http://host:port/v1?model=NAME`` (``&vision=1`` for image input) or
    ``huggingface:///path/to/model``. An empty URL is a ConfigError: callers use the rule-based
    extractor when no LLM is configured.
    """
    if not url:
        raise ConfigError("no chat model URL given")
    scheme = urllib.parse.urlsplit(url).scheme
    target = CHAT_MODELS.get(scheme)
    if target is None:
        raise ConfigError(f"unknown chat model URL {url!r}; schemes: {sorted(CHAT_MODELS)!r}")
    module_name, _, class_name = target.partition(":")
    try:
        cls: type[ChatModel] = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise ConfigError(f"chat model {url!r} needs a missing package or module: {exc}") from exc
    if scheme == "huggingface":  # huggingface:///path is the documented spelling of hf:///path
        url = "hf://" + url[len("huggingface://") :]
    try:
        model = cls.from_url(url, api_key=api_key)
    except NotImplementedError as exc:
        raise ConfigError(str(exc)) from exc
    logger.info("chat_model=%s url_scheme=%s", model.model_id, scheme)
    return model
