"""The Reranker port (optional, off by default) with a lexical adapter and an HTTP ``/rerank`` adapter.

``reranker_from_url`` picks the adapter by scheme: ``lexical://`` gives :class:`LexicalReranker`
(no model, no I/O); ``http(s)://host/v1/rerank?model=NAME`` gives :class:`HttpReranker`, which speaks
the Jina / Cohere / text-embeddings-inference style ``POST /rerank`` protocol that OpenAI-compatible
servers (vLLM, TEI, LocalAI) expose: ``{"model", "query", "documents"}`` in,
``{"results": [{"index", "relevance_score"}]}`` out.
"""

from __future__ import annotations

import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit, urlunsplit

from schemas.errors import ConfigError, ModelOutputInvalid, ModelUnavailable

__all__ = ["HttpReranker", "LexicalReranker", "Reranker", "reranker_from_url"]

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Reranker(ABC):
    """Scores (query, document) pairs; used on the best hits of a search when configured."""

    model_id: str = "reranker"

    @abstractmethod
    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """One relevance score in [0, 1] per document, in the order given; [] for no documents.

        Deterministic for the same input. Raises ModelUnavailable (retryable) when a remote model does
        not answer, ModelOutputInvalid when it answers with something unusable.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook; stateless adapters keep the default
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class LexicalReranker(Reranker):
    """A model-free reranker: IDF-weighted query-term coverage plus a bonus for adjacent query bigrams.

    IDF is computed over the documents being reranked, so terms that every candidate shares count
    little. Scores are in [0, 1]: 1 means every query term and bigram occurs.
    """

    model_id = "lexical"

    def __init__(self, *, bigram_weight: float = 0.3) -> None:
        self.bigram_weight = bigram_weight

    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        terms = list(dict.fromkeys(t for t in _TOKEN.findall(query.lower()) if len(t) > 1))
        if not documents:
            return []
        if not terms:
            return [0.0] * len(documents)
        docs = [_TOKEN.findall(d.lower()) for d in documents]
        sets = [set(d) for d in docs]
        n = len(docs)
        idf = {t: math.log(1.0 + (n + 1) / (1 + sum(t in s for s in sets))) for t in terms}
        total = sum(idf.values())
        bigrams = list(zip(terms, terms[1:], strict=False))
        scores = []
        for tokens, present in zip(docs, sets, strict=True):
            unigram = sum(idf[t] for t in terms if t in present) / total
            if bigrams:
                pairs = set(zip(tokens, tokens[1:], strict=False))
                bigram = sum(1 for b in bigrams if b in pairs) / len(bigrams)
            else:
                bigram = unigram
            scores.append(round((1 - self.bigram_weight) * unigram + self.bigram_weight * bigram, 6))
        return scores


class HttpReranker(Reranker):
    """A remote reranker behind ``POST {url}`` (Jina/Cohere/TEI ``/rerank`` shape), via httpx."""

    def __init__(
        self, url: str, *, model: str = "", api_key: str | None = None, timeout_s: float = 5.0
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            raise ImportError('HttpReranker needs httpx: pip install "memos-stream"') from exc
        self.url = url
        self.model_id = model or "rerank"
        self._model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        import httpx

        if not documents:
            return []
        body: dict[str, Any] = {"query": query, "documents": list(documents), "top_n": len(documents)}
        if self._model:
            body["model"] = self._model
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"reranker at {self.url!r} did not answer: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ModelUnavailable(f"reranker at {self.url!r} answered {response.status_code!r}")
        if response.status_code >= 400:
            raise ModelOutputInvalid(f"reranker at {self.url!r} refused the request: {response.text[:200]!r}")
        try:
            payload = response.json()
            results = payload["results"] if isinstance(payload, dict) else payload
            scores = [0.0] * len(documents)
            for item in results:
                scores[int(item["index"])] = float(item.get("relevance_score", item.get("score")))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelOutputInvalid(f"reranker at {self.url!r} gave an unusable answer: {exc!r}") from exc
        if any(s < 0.0 or s > 1.0 for s in scores):
            scores = [1.0 / (1.0 + math.exp(-s)) for s in scores]  # logits -> [0, 1]
        return scores

    async def aclose(self) -> None:
        await self._client.aclose()


def reranker_from_url(url: str | None, *, api_key: str | None = None) -> Reranker | None:
    """The reranker a URL names: None or "" (off), ``lexical://``, or ``http(s)://.../rerank?model=NAME[&timeout=S]``
    (S seconds per request, default 5: a search waits that long at most before answering unreranked)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "lexical":
        return LexicalReranker()
    if parts.scheme in ("http", "https"):
        options = parse_qs(parts.query)
        model = options.get("model", [""])[0]
        try:
            timeout_s = float(options.get("timeout", ["5"])[0])
        except ValueError:
            timeout_s = -1.0
        if not 0 < timeout_s <= 300:
            raise ConfigError(f"invalid timeout in reranker URL {url!r}: seconds in (0, 300]")
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return HttpReranker(plain, model=model, api_key=api_key, timeout_s=timeout_s)
    raise ConfigError(
        f"unknown reranker URL scheme {parts.scheme!r} in {url!r}: use lexical:// or http(s)://"
    )
