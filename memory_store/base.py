"""Ports of the projection stores: GraphStore, VectorStore, KeywordIndex, each checkpointed by offset."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Literal, NamedTuple, Self

from schemas.envelope import Position
from schemas.memory import MemoryRecord, RelationRecord, ScoredMemory
from schemas.ops import AnyOp

__all__ = ["Ask", "GraphStore", "KeywordIndex", "Lending", "Projection", "VectorStore"]

logger = logging.getLogger(__name__)


class Ask(NamedTuple):
    """One search of a ``search_each`` call: its ``k`` and the memory types it is restricted to (None: all)."""

    k: int
    memory_types: Sequence[str] | None


class Lending(NamedTuple):
    """How another process replays a store: ``opener`` (picklable) opens it there, and ``reads`` names the
    fields the store reads of each op type (of the op's record for UpsertMemory and UpsertRelation): only
    those travel, and ops of the other types are not sent (the store must ignore them)."""

    opener: Callable[[], Projection]
    reads: Mapping[type[AnyOp], tuple[str, ...]]


class Projection(ABC):
    """A store derived from the log; applies ops idempotently and records the last applied offset.

    Checkpoints are kept per (projection name, topic, partition). ``apply`` skips a position at or
    below the checkpoint; otherwise it writes the ops and the checkpoint atomically (embedded, Cypher
    transactions) or writes ops with deterministic ids and then the checkpoint (Weaviate).
    """

    name: str = "projection"

    @abstractmethod
    async def start(self) -> None:
        """Open the store, create schema and indexes. Idempotent. Raises StoreUnavailable."""

    @abstractmethod
    async def aclose(self) -> None:
        """Flush and close. Idempotent."""

    @abstractmethod
    async def apply(self, ops: Sequence[AnyOp], position: Position, *, replay: bool = False) -> bool:
        """Apply ``ops`` produced from the record at ``position``.

        Returns False without writing when ``position.offset`` <= the checkpoint of its partition.
        With ``replay=True`` the ops are applied regardless and the checkpoint is left unchanged (used
        to rebuild one cube while the live checkpoint stays where it is). Ops are applied in order;
        every op is idempotent, so applying the same position twice leaves the same state.
        Raises StoreUnavailable (retryable) or StoreError.
        """

    @abstractmethod
    async def checkpoint(self, topic: str, partition: int) -> int | None:
        """Offset of the last record applied from that partition, or None."""

    def lending(self) -> Lending | None:
        """How another process (a replay helper) can replay this store, or None when only this process can
        write it (the default: state held in memory, or a remote engine)."""
        return None

    async def lend(self) -> None:
        """Before another process writes this store: let go of what only one process may hold (writers)."""
        return None

    async def take_back(self, cube_id: str) -> None:
        """After another process rewrote ``cube_id`` in this store: drop what this process cached of it."""
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class GraphStore(Projection):
    """Memories as nodes with their full record, and typed edges between them."""

    name = "graph"

    @abstractmethod
    async def get(self, memory_ids: Sequence[str], *, cube_id: str | None = None) -> list[MemoryRecord]:
        """Records of these ids (retired ones included), in the order asked; unknown ids are left out.

        With ``cube_id`` only memories of that cube are returned (deletes and reads are cube-scoped).
        """

    @abstractmethod
    async def list_memories(
        self,
        cube_id: str,
        *,
        include_retired: bool = False,
        memory_types: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        """Memories of a cube ordered by (created_at, id); retired ones only when asked."""

    async def find_memories(
        self,
        cube_id: str,
        *,
        text: str = "",
        extractor: str = "",
        status: Literal["activated", "retired", "all"] = "activated",
        memory_types: Sequence[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        """Memories of a cube ordered by (created_at, id) that have this status ("all": any), contain
        ``text`` (case-folded; empty: any) and come from ``extractor`` (empty: any), ``limit`` of them after
        skipping ``offset`` matches.

        This default scans ``list_memories`` in chunks and stops once it has enough; an adapter that can
        filter inside its engine overrides it with one bounded query."""
        needle = text.casefold()
        matches: list[MemoryRecord] = []
        position, chunk = 0, 1000
        while len(matches) < offset + limit:
            batch = await self.list_memories(cube_id, include_retired=status != "activated",
                                             memory_types=memory_types, limit=chunk, offset=position)
            matches.extend(r for r in batch if (status == "all" or r.status == status)
                           and needle in r.memory.casefold() and (not extractor or r.extractor == extractor))
            position += len(batch)
            if len(batch) < chunk:
                break
        return matches[offset:offset + limit]

    @abstractmethod
    async def count(self, cube_id: str, *, include_retired: bool = False) -> int:
        """Number of memories in a cube."""

    @abstractmethod
    async def relations(self, cube_id: str) -> list[RelationRecord]:
        """Every edge of a cube, ordered by id."""

    @abstractmethod
    async def neighbors(
        self, memory_ids: Sequence[str], *, relations: Sequence[str] | None = None, limit: int = 50
    ) -> list[RelationRecord]:
        """Edges touching any of ``memory_ids`` (either direction), optionally of given types."""

    @abstractmethod
    async def cubes(self) -> list[str]:
        """Ids of cubes that hold at least one memory."""


class VectorStore(Projection):
    """Embeddings of current memories, searchable by cosine similarity per cube."""

    name = "vector"

    @abstractmethod
    async def search(
        self,
        cube_id: str,
        vector: Sequence[float],
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        """Top ``k`` memories by cosine similarity (score in [-1, 1], best first).

        Raises DimensionMismatch when ``vector`` does not fit the cube's dimension.
        """

    async def search_many(
        self,
        cube_id: str,
        vectors: Sequence[Sequence[float]],
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[list[ScoredMemory]]:
        """``search`` for each of ``vectors``, in order (here one call each; an adapter may answer them together)."""
        return list(await asyncio.gather(*(
            self.search(cube_id, v, k=k, memory_types=memory_types, include_retired=include_retired) for v in vectors
        )))  # fmt: skip

    async def search_each(
        self, cube_id: str, vector: Sequence[float], asks: Sequence[Ask], *, include_retired: bool = False
    ) -> list[list[ScoredMemory]]:
        """``search`` of ``vector`` for each ask, in order (here one call each; an adapter may answer them together).

        A search asks one cube this for all of its buckets (text, preference, tool, skill memories).
        """
        return list(await asyncio.gather(*(
            self.search(cube_id, vector, k=a.k, memory_types=a.memory_types, include_retired=include_retired)
            for a in asks
        )))  # fmt: skip

    @abstractmethod
    async def dimension(self, cube_id: str) -> int | None:
        """Dimension of the cube's vectors, or None when it has none."""


class KeywordIndex(Projection):
    """BM25 keyword search over current memories, per cube."""

    name = "keyword"

    @abstractmethod
    async def search(
        self,
        cube_id: str,
        query: str,
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        """Top ``k`` memories by BM25 (higher is better). A query with no usable terms returns []."""

    async def search_each(
        self, cube_id: str, query: str, asks: Sequence[Ask], *, include_retired: bool = False
    ) -> list[list[ScoredMemory]]:
        """``search`` of ``query`` for each ask, in order (here one call each; an adapter may answer them
        together, from one snapshot)."""
        return list(await asyncio.gather(*(
            self.search(cube_id, query, k=a.k, memory_types=a.memory_types, include_retired=include_retired)
            for a in asks
        )))  # fmt: skip
