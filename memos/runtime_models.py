"""The models a runtime builds from its settings: embedder, chat model, deriver (with its fetcher) and search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from memory_store.base import GraphStore, KeywordIndex, VectorStore
from memory_store.embedding.base import Embedder
from memory_store.llm.base import ChatModel
from streams.pipeline.derivation import Deriver
from streams.pipeline.derivation_types import similar_in
from streams.settings import DerivationSettings

if TYPE_CHECKING:
    from memos.application.search import SearchService

__all__ = ["Models", "build_models"]


@dataclass(slots=True)
class Models:
    """What ``build_models`` made; ``aclose`` releases their connections."""

    embedder: Embedder
    llm: ChatModel | None
    deriver: Deriver
    search: SearchService

    async def aclose(self) -> None:
        """Close the embedder, the chat model and the reranker."""
        await self.embedder.aclose()
        if self.llm is not None:
            await self.llm.aclose()
        if self.search.reranker is not None:
            await self.search.reranker.aclose()


def build_models(d: DerivationSettings, graph: GraphStore, vector: VectorStore, keyword: KeywordIndex) -> Models:
    """The models ``d`` names, over these stores (ConfigError for a URL no adapter takes)."""
    from memory_store.embedding import embedder_from_url
    from memory_store.fetch import HttpxFetcher
    from memory_store.rerank import reranker_from_url
    from memos.application.search import SearchService
    from processors.search_settings import SearchSettings
    from streams.pipeline.derivation import DeriverSettings

    embedder = embedder_from_url(d.embedder_url)
    llm: ChatModel | None = None
    if d.llm_url:
        from memory_store.llm import chat_model_from_url

        llm = chat_model_from_url(d.llm_url, api_key=d.llm_api_key.get_secret_value() or None)
    fetcher = HttpxFetcher(max_bytes=d.fetch_max_bytes, timeout_s=d.fetch_timeout_s,
                           allow_hosts=d.fetch_allow_hosts, local_roots=d.fetch_local_roots)
    deriver = Deriver(embedder, chat_model=llm, fetcher=fetcher,
                      settings=DeriverSettings.from_config(d, model_id=embedder.model_id),
                      similar=similar_in(vector, graph) if d.dedup else None)
    reranker = reranker_from_url(d.reranker_url, api_key=d.reranker_api_key.get_secret_value() or None)
    search = SearchService(graph, vector, keyword, embedder, reranker=reranker,
                           settings=SearchSettings(rerank_in_fast_mode=d.reranker_in_fast_mode))
    return Models(embedder, llm, deriver, search)
