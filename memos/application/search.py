"""SearchService: the shell of multi-cube search; it queries the stores and leaves the ranking to processors.

One search embeds the query once, then for every readable cube, in parallel, runs a vector k-NN and a BM25
search for each requested bucket (text, preference, tool, skill memories), restricted to the bucket's memory
types (one ``search_each`` call per store and cube answers all the buckets); for text it reads the graph
neighbours of the strongest fused hits. When the
query names a speaker who labels the lines of most of a cube's BM25 text hits (``processors.speakers``),
that cube's vector searches embed the query without the name instead (still one embedding per text). Records are
loaded from the graph store, scored by ``processors.retrieval.score_hits``, optionally reranked,
thresholded and deduplicated by ``select_hits``, and shaped into MemOS's ``data`` dict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from memory_store.base import Ask, GraphStore, KeywordIndex, VectorStore
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
from processors.speakers import query_without_speakers, speaker_names
from schemas.errors import DimensionMismatch, ModelError, ModelOutputInvalid, ValidationFailed
from schemas.memory import MemoryRecord, RelationRecord, ScoredMemory

__all__ = ["SearchService"]

logger = logging.getLogger(__name__)

RERANKER_PAUSE_S = 30.0
"""After a reranker fails, searches skip it this long."""

_BUCKETS: tuple[Bucket, ...] = ("text", "pref", "tool", "skill")


def _first_leaf(error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a caller should see from a failed task group: its first leaf (a store or model error)."""
    first = error.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


_REMEMBERED_CUBES = 10_000
"""Cubes whose speakers a search service remembers at most."""


class _QueryEmbeddings:
    """The query texts one search embeds, each once, as tasks of the search's task group."""

    def __init__(
        self, embed: Callable[[str], Coroutine[Any, Any, Embeddings]], group: asyncio.TaskGroup
    ) -> None:
        self.embed = embed
        self.group = group
        self.tasks: dict[str, asyncio.Task[Embeddings]] = {}

    def get(self, text: str) -> asyncio.Task[Embeddings]:
        if text not in self.tasks:
            self.tasks[text] = self.group.create_task(self.embed(text))
        return self.tasks[text]


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.graph = graph
        self.vector = vector
        self.keyword = keyword
        self.embedder = embedder
        self.reranker = reranker
        self.clock = clock
        """Seconds on a monotonic clock: what the pause after a reranker's failure is measured on."""
        self._reranker_back_at = 0.0
        """``clock`` time before which a failed reranker is not asked again (RERANKER_PAUSE_S after a failure)."""
        self.settings = (settings or SearchSettings()).for_model(embedder.model_id)
        self._speakers: dict[str, frozenset[str]] = {}
        """Per cube, the speakers its last search's keyword hits named (bounded; oldest forgotten first): the
        text embedded while this search's keyword search runs is the guess they give."""

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
        # The query is embedded while the keyword searches (which do not need its vector) already run;
        # with speaker_share on, a cube's text keyword hits first decide which text is embedded.
        try:
            async with asyncio.TaskGroup() as group:
                embeddings = _QueryEmbeddings(self._embed, group)
                tasks = {
                    cube: group.create_task(self._cube(cube, buckets, query, embeddings, flt))
                    for cube in query.readable_cube_ids
                }
        except BaseExceptionGroup as group_error:
            raise _first_leaf(group_error) from None
        embed_ms = sum(t.result().latency_ms for t in embeddings.tasks.values())
        for bucket in buckets:
            per_cube = {cube: tasks[cube].result()[bucket] for cube in query.readable_cube_ids}
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
            embed_ms,
        )
        return data

    def _remember_speakers(self, cube: str, speakers: set[str]) -> None:
        self._speakers.pop(cube, None)
        self._speakers[cube] = frozenset(speakers)
        while len(self._speakers) > _REMEMBERED_CUBES:
            del self._speakers[next(iter(self._speakers))]

    async def _embed(self, text: str) -> Embeddings:
        embeddings = await self.embedder.embed([text], kind="query")
        if len(embeddings.vectors) != 1:
            raise ModelOutputInvalid(f"embedder returned {len(embeddings.vectors)!r} vectors for one query")
        return embeddings

    async def _cube(
        self,
        cube: str,
        buckets: Sequence[Bucket],
        query: SearchQuery,
        embeddings: _QueryEmbeddings,
        flt: Filter | None,
    ) -> dict[Bucket, list[Hit]]:
        """One cube's buckets. One keyword and one vector call answer all of them (``search_each``, each
        ask restricted to its bucket's memory types): most cubes hold no memories of most buckets, and a
        call per bucket cost a thread hop each for nothing. With ``speaker_share`` on, the text bucket's
        keyword hits decide which text the dense searches embed (``processors.speakers``)."""
        filtered = flt is not None
        asks = [Ask(candidate_k(bucket_limit(b, query), self.settings, filtered=filtered), list(bucket_types(b, query)))
                for b in buckets]  # fmt: skip
        text = keyword_query(query.query, strip_stopwords=self.settings.strip_stopwords)
        decide = self.settings.speaker_share > 0 and "text" in buckets
        records: dict[str, MemoryRecord] = {}
        async with asyncio.TaskGroup() as group:
            keyword_task = group.create_task(
                self.keyword.search_each(cube, text, asks, include_retired=query.include_history)
            )
            # search now with what the cube's last speakers say the text will be; the text bucket's keyword
            # hits decide below, and a wrong guess is searched again
            guess = query.query
            if decide:
                guess = query_without_speakers(query.query, self._speakers.get(cube, ())) or query.query
            guessed = group.create_task(self._dense_each(cube, embeddings.get(guess), asks, query.include_history))
            dense_text = guess
            if decide:
                keyword_ids = [m.memory_id for m in (await keyword_task)[buckets.index("text")]]
                records = await self._records(cube, {"keyword": keyword_ids}, records)
                speakers = speaker_names((records[i].memory for i in keyword_ids if i in records),
                                         share=self.settings.speaker_share)  # fmt: skip
                self._remember_speakers(cube, speakers)
                dense_text = query_without_speakers(query.query, speakers) or query.query
            dense_task = guessed
            if dense_text != guess:
                dense_task = group.create_task(
                    self._dense_each(cube, embeddings.get(dense_text), asks, query.include_history))
        vector = embeddings.get(dense_text).result().vectors[0]  # done: the dense search awaited it
        rankings: dict[Bucket, dict[str, list[str]]] = {
            b: {"dense": [m.memory_id for m in dense], "keyword": [m.memory_id for m in keyword]}
            for b, dense, keyword in zip(buckets, dense_task.result(), keyword_task.result(), strict=True)
        }
        expansion = Expansion()
        if "text" in rankings:
            relations = await self._neighbors(expansion_seeds(rankings["text"], self.settings))
            expansion = graph_expansion(rankings["text"], relations, self.settings)
            rankings["text"]["graph"] = list(expansion.ranking)
        wanted = {f"{b}:{name}": ids for b, named in rankings.items() for name, ids in named.items()}
        records = await self._records(cube, wanted, records)
        out: dict[Bucket, list[Hit]] = {}
        for b in buckets:
            if not any(rankings[b].values()):  # nothing found (a bucket the cube has no memories of)
                out[b] = []
                continue
            out[b] = score_hits(
                b,
                rankings[b],
                records,
                query=query,
                query_vector=vector,
                terms=query_terms(query.query),
                flt=flt,
                settings=self.settings,
                links=expansion.links if b == "text" else None,
                query_model=self.embedder.model_id,
            )
        if self.reranker is not None and (query.mode != "fast" or self.settings.rerank_in_fast_mode):
            reranked = await asyncio.gather(*(self._rerank(query, out[b]) for b in buckets))
            out = dict(zip(buckets, reranked, strict=True))
        return out

    async def _rerank(self, query: SearchQuery, hits: list[Hit]) -> list[Hit]:
        """``hits`` with the reranker's scores on the best ``rerank_pool`` of them."""
        if self.reranker is None or not hits or self.clock() < self._reranker_back_at:
            return hits
        head = hits[: self.settings.rerank_pool]
        try:
            scores = await self.reranker.rerank(query.query, [h.record.memory for h in head])
            if len(scores) != len(head):
                raise ModelOutputInvalid(f"reranker gave {len(scores)!r} scores for {len(head)!r} memories")
        except ModelError as exc:  # a refinement, not a retriever: search answers in the retrievers' order, and
            # the searches of the next RERANKER_PAUSE_S do not wait for it again (an outage costs one timeout)
            self._reranker_back_at = self.clock() + RERANKER_PAUSE_S
            logger.warning("%s; searches answer without reranking for %.0f s", exc, RERANKER_PAUSE_S)
            return hits
        return apply_rerank(hits, scores, self.settings)

    async def _records(
        self, cube: str, rankings: Mapping[str, Sequence[str]], records: dict[str, MemoryRecord]
    ) -> dict[str, MemoryRecord]:
        """``records`` plus those of the ranked ids not read yet (no store round trip when none is new)."""
        wanted = [i for i in dict.fromkeys(i for ids in rankings.values() for i in ids) if i not in records]
        if wanted:
            records.update((r.id, r) for r in await self.graph.get(wanted, cube_id=cube))
        return records

    async def _dense_each(
        self, cube: str, embedding: asyncio.Task[Embeddings], asks: Sequence[Ask], include_retired: bool
    ) -> list[list[ScoredMemory]]:
        """The vector searches of ``asks`` with the vector of ``embedding`` (a task other cubes may share)."""
        vector = (await asyncio.shield(embedding)).vectors[0]
        try:
            return await self.vector.search_each(cube, vector, asks, include_retired=include_retired)
        except DimensionMismatch as exc:
            # a cube embedded by another model still answers by keyword and graph; say so in the log
            logger.warning("dense search skipped cube=%s model=%s: %s", cube, self.embedder.model_id, exc)
            return [[] for _ in asks]

    async def _neighbors(self, seeds: Sequence[str]) -> list[RelationRecord]:
        if not seeds:
            return []
        relations = [r for r, w in self.settings.relation_weights.items() if w > 0]
        return await self.graph.neighbors(seeds, relations=relations, limit=self.settings.expansion_limit)
