"""WeaviateVectorStore and WeaviateKeywordIndex: the vector and BM25 projections in Weaviate (client v4, async).

Layout: one collection per projection (default ``MemosVector`` / ``MemosKeyword``) with multi-tenancy,
one tenant per cube (a cube id that is not a valid tenant name maps to ``c_<sha1>``), so a cube has
its own vector index (and dimension) and ``DropCube`` removes its tenant. Every object's UUID is
uuid5 of the memory id, so a replayed write overwrites itself. Vectors are ours (named vector
``default``, no vectorizer, cosine HNSW). BM25 runs over ``terms``: the memory text (and key),
lower-cased, split into words, with CJK runs split into single characters plus bigrams, stored with
whitespace tokenization, so Chinese and Japanese match without a server-side segmenter.

The write path (plan, then drop tenants, upsert, checkpoint last) is ``weaviate_projection``; the
object layout is ``weaviate_schema``. Needs Weaviate >= 1.25 (named vectors, auto tenant creation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from memory_store.base import KeywordIndex, VectorStore
from memory_store.vector.weaviate_projection import WeaviateProjection
from memory_store.vector.weaviate_schema import (
    VECTOR_NAME,
    keyword_terms,
    map_weaviate_errors,
    tenant_name,
)
from schemas.errors import DimensionMismatch
from schemas.memory import ScoredMemory

__all__ = [
    "WeaviateKeywordIndex",
    "WeaviateVectorStore",
    "keyword_terms",
    "map_weaviate_errors",
    "tenant_name",
]

logger = logging.getLogger(__name__)


class WeaviateVectorStore(WeaviateProjection, VectorStore):
    """Cosine k-NN per cube over Weaviate (HNSW per tenant), plus ``hybrid`` (BM25 + vector)."""

    keeps_vectors = True
    default_collection = "MemosVector"

    async def dimension(self, cube_id: str) -> int | None:
        return await self._stored_dimension(tenant_name(cube_id))

    async def _check(self, tenant: str, vector: Sequence[float]) -> bool:
        known = await self._stored_dimension(tenant)
        if known is None:
            return False
        if known != len(vector):
            raise DimensionMismatch(
                f"cube tenant {tenant!r} holds {known}-d vectors, query is {len(vector)}-d"
            )
        return True

    async def search(
        self,
        cube_id: str,
        vector: Sequence[float],
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        from weaviate.classes.query import MetadataQuery

        tenant = tenant_name(cube_id)
        if k <= 0 or (memory_types is not None and not memory_types) or not await self._check(tenant, vector):
            return []
        with map_weaviate_errors("vector search"):
            result = await self._memories().with_tenant(tenant).query.near_vector(
                near_vector=[float(v) for v in vector], target_vector=VECTOR_NAME, limit=k,
                filters=self._filters(include_retired, memory_types),
                return_metadata=MetadataQuery(distance=True), return_properties=["memory_id"],
            )  # fmt: skip
        return [
            ScoredMemory(
                memory_id=obj.properties["memory_id"],
                cube_id=cube_id,
                score=1.0 - float(obj.metadata.distance),
                retriever="vector",
            )  # fmt: skip
            for obj in result.objects
        ]

    async def hybrid(
        self,
        cube_id: str,
        query: str,
        vector: Sequence[float],
        *,
        alpha: float = 0.5,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        """Weaviate's hybrid search: BM25 over ``terms`` fused with cosine k-NN (``alpha`` 1 = vector only)."""
        from weaviate.classes.query import MetadataQuery

        tenant = tenant_name(cube_id)
        if k <= 0 or (memory_types is not None and not memory_types) or not await self._check(tenant, vector):
            return []
        with map_weaviate_errors("hybrid search"):
            result = await self._memories().with_tenant(tenant).query.hybrid(
                query=" ".join(dict.fromkeys(keyword_terms(query))) or None, vector=[float(v) for v in vector],
                target_vector=VECTOR_NAME, alpha=alpha, query_properties=["terms"], limit=k,
                filters=self._filters(include_retired, memory_types),
                return_metadata=MetadataQuery(score=True), return_properties=["memory_id"],
            )  # fmt: skip
        return [
            ScoredMemory(
                memory_id=obj.properties["memory_id"],
                cube_id=cube_id,
                score=float(obj.metadata.score or 0.0),
                retriever="hybrid",
            )  # fmt: skip
            for obj in result.objects
        ]


class WeaviateKeywordIndex(WeaviateProjection, KeywordIndex):
    """BM25 per cube over Weaviate's inverted index (objects without vectors)."""

    keeps_vectors = False
    default_collection = "MemosKeyword"

    async def search(
        self,
        cube_id: str,
        query: str,
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        from weaviate.classes.query import MetadataQuery

        terms = list(dict.fromkeys(keyword_terms(query)))
        tenant = tenant_name(cube_id)
        if not terms or k <= 0 or (memory_types is not None and not memory_types):
            return []
        if not await self._tenant_exists(tenant):
            return []
        with map_weaviate_errors("keyword search"):
            result = await self._memories().with_tenant(tenant).query.bm25(
                query=" ".join(terms), query_properties=["terms"], limit=k,
                filters=self._filters(include_retired, memory_types),
                return_metadata=MetadataQuery(score=True), return_properties=["memory_id"],
            )  # fmt: skip
        hits = [
            ScoredMemory(
                memory_id=obj.properties["memory_id"],
                cube_id=cube_id,
                score=float(obj.metadata.score or 0.0),
                retriever="keyword",
            )  # fmt: skip
            for obj in result.objects
        ]
        return [hit for hit in hits if hit.score > 0]
