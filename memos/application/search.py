"""SearchService: the shell of multi-cube search; it queries the stores and leaves the ranking to processors.

One search embeds the query once, then for every readable cube and every requested bucket (text,
preference, tool, skill memories) runs, in parallel, a vector k-NN and a BM25 search restricted to the
bucket's memory types; for text it reads the graph neighbours of the strongest fused hits. Records are
loaded from the graph store, scored by ``processors.retrieval.score_hits``, optionally reranked,
thresholded and deduplicated by ``select_hits``, and shaped into MemOS's ``data`` dict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from memory_store.base import GraphStore, KeywordIndex, VectorStore
from memory_store.embedding.base import Embedder, Embeddings
from memory_store.rerank import Reranker
from processors.filters import Filter, compile_filter
from processors.fusion import keyword_query, query_terms
from processors.retrieval import (
    Bucket,
    Expansion,
    Hit,
    SearchQuery,
    SearchSettings,
    apply_rerank,
    bucket_limit,
    bucket_types,
    candidate_k,
    expansion_seeds,
    graph_expansion,
    score_hits,
)
from processors.search_response import build_response, select_hits
from schemas.errors import DimensionMismatch, ModelOutputInvalid, ValidationFailed
from schemas.memory import MemoryRecord, RelationRecord, ScoredMemory

__all__ = ["SearchService"]

logger = logging.getLogger(__name__)

_BUCKETS: tuple[Bucket, ...] = ("text", "pref", "tool", "skill")


def _first_leaf(error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a caller should see from a failed task group: its first leaf (a store or model error)."""
    first = error.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class SearchService:
    """Multi-cube search over the projection stores, answering in MemOS's response shape.

    Cube permissions are the caller's concern: every id in ``readable_cube_ids`` is searched, and a
    cube without memories gives empty buckets. The stores must be started by the caller.
    """

    def __init__(
        self,
        graph: GraphStore,
        vector: VectorStore,
        keyword: KeywordIndex,
        embedder: Embedder,
        *,
        reranker: Reranker | None = None,
        settings: SearchSettings | None = None,
    ) -> None:
        self.graph = graph
        self.vector = vector
        self.keyword = keyword
        self.embedder = embedder
        self.reranker = reranker
        self.settings = (settings or SearchSettings()).for_model(embedder.model_id)

    async def search(self, query: SearchQuery) -> dict[str, Any]:
        """Search every readable cube and return MemOS's ``data`` dict (see ``processors.retrieval``).

        Raises ValidationFailed for an empty query or a malformed filter, ModelError when the embedder
        fails, StoreError when a store does.
        """
        if not query.query.strip():
            raise ValidationFailed("query must not be empty", field="query")
        flt = compile_filter(query.filter)
        started = time.perf_counter()
        if query.internet_search:
            logger.info("internet_search requested but not supported; searching memories only")
        buckets = [b for b in _BUCKETS if bucket_limit(b, query) > 0]
        selected: dict[Bucket, dict[str, list[Hit]]] = {
            b: {c: [] for c in query.readable_cube_ids} for b in _BUCKETS
        }
        if not query.readable_cube_ids or not buckets:
            return build_response(query, selected)
        # The query is embedded while the keyword searches (which do not need its vector) already run.
        try:
            async with asyncio.TaskGroup() as group:
                embedding = group.create_task(self._embed(query.query))
                tasks = {
                    (cube, bucket): group.create_task(self._bucket(cube, bucket, query, embedding, flt))
                    for cube in query.readable_cube_ids
                    for bucket in buckets
                }
        except BaseExceptionGroup as group_error:
            raise _first_leaf(group_error) from None
        embeddings = embedding.result()
        for bucket in buckets:
            per_cube = {cube: tasks[cube, bucket].result() for cube in query.readable_cube_ids}
            is_text = bucket == "text"
            selected[bucket] = select_hits(
                per_cube,
                limit=bucket_limit(bucket, query),
                dedup=query.dedup if is_text else None,
                min_relativity=query.relativity,
                settings=self.settings,
            )
        data = build_response(query, selected)
        logger.info(
            "search cubes=%d buckets=%s text_hits=%d took_ms=%.1f embed_ms=%.1f",
            len(query.readable_cube_ids),
            ",".join(buckets),
            sum(len(v) for v in selected["text"].values()),
            (time.perf_counter() - started) * 1000,
            embeddings.latency_ms,
        )
        return data

    async def _embed(self, text: str) -> Embeddings:
        embeddings = await self.embedder.embed([text], kind="query")
        if len(embeddings.vectors) != 1:
            raise ModelOutputInvalid(f"embedder returned {len(embeddings.vectors)!r} vectors for one query")
        return embeddings

    async def _bucket(
        self,
        cube: str,
        bucket: Bucket,
        query: SearchQuery,
        embedding: asyncio.Task[Embeddings],
        flt: Filter | None,
    ) -> list[Hit]:
        types = list(bucket_types(bucket, query))
        k = candidate_k(bucket_limit(bucket, query), self.settings, filtered=flt is not None)
        text = keyword_query(query.query, strip_stopwords=self.settings.strip_stopwords)
        async with asyncio.TaskGroup() as group:
            keyword_task = group.create_task(
                self.keyword.search(
                    cube, text, k=k, memory_types=types, include_retired=query.include_history
                )
            )
            vector = (await asyncio.shield(embedding)).vectors[0]
            dense_task = group.create_task(self._dense(cube, vector, k, types, query.include_history))
        rankings: dict[str, list[str]] = {
            "dense": [m.memory_id for m in dense_task.result()],
            "keyword": [m.memory_id for m in keyword_task.result()],
        }
        expansion = Expansion()
        if bucket == "text":
            relations = await self._neighbors(expansion_seeds(rankings, self.settings))
            expansion = graph_expansion(rankings, relations, self.settings)
            rankings["graph"] = list(expansion.ranking)
        wanted = list(dict.fromkeys(i for ids in rankings.values() for i in ids))
        if not wanted:  # nothing found (a bucket the cube has no memories of): no store round trip
            return []
        records: dict[str, MemoryRecord] = {r.id: r for r in await self.graph.get(wanted, cube_id=cube)}
        hits = score_hits(
            bucket,
            rankings,
            records,
            query=query,
            query_vector=vector,
            terms=query_terms(query.query),
            flt=flt,
            settings=self.settings,
            links=expansion.links,
            query_model=self.embedder.model_id,
        )
        if self.reranker is not None and hits and (query.mode != "fast" or self.settings.rerank_in_fast_mode):
            head = hits[: self.settings.rerank_pool]
            scores = await self.reranker.rerank(query.query, [h.record.memory for h in head])
            if len(scores) != len(head):
                raise ModelOutputInvalid(f"reranker gave {len(scores)!r} scores for {len(head)!r} memories")
            hits = apply_rerank(hits, scores, self.settings)
        return hits

    async def _dense(
        self, cube: str, vector: Sequence[float], k: int, types: Sequence[str], include_retired: bool
    ) -> list[ScoredMemory]:
        try:
            return await self.vector.search(
                cube, vector, k=k, memory_types=types, include_retired=include_retired
            )
        except DimensionMismatch as exc:
            # a cube embedded by another model still answers by keyword and graph; say so in the log
            logger.warning("dense search skipped cube=%s model=%s: %s", cube, self.embedder.model_id, exc)
            return []

    async def _neighbors(self, seeds: Sequence[str]) -> list[RelationRecord]:
        if not seeds:
            return []
        relations = [r for r, w in self.settings.relation_weights.items() if w > 0]
        return await self.graph.neighbors(seeds, relations=relations, limit=self.settings.expansion_limit)
