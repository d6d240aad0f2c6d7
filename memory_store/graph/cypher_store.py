"""The read side shared by every Cypher graph store: one implementation over the Cypher core's queries."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from memory_store.base import GraphStore
from memory_store.graph import cypher, properties
from schemas.memory import MemoryRecord, RelationRecord

__all__ = ["CypherGraphStore"]

logger = logging.getLogger(__name__)


class CypherGraphStore(GraphStore):
    """GraphStore reads written once over ``cypher`` queries; drivers supply ``_read``."""

    @abstractmethod
    async def _read(self, query: cypher.Query, what: str) -> list[dict[str, Any]]:
        """Run a read query and return its rows as dicts; driver errors mapped to StoreError."""

    async def list_memories(
        self,
        cube_id: str,
        *,
        include_retired: bool = False,
        memory_types: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        query = cypher.list_query(
            cube_id, include_retired=include_retired, memory_types=memory_types, limit=limit, offset=offset
        )
        return [properties.memory_from_props(row["m"]) for row in await self._read(query, "list_memories")]

    async def count(self, cube_id: str, *, include_retired: bool = False) -> int:
        rows = await self._read(cypher.count_query(cube_id, include_retired=include_retired), "count")
        return int(rows[0]["n"]) if rows else 0

    async def relations(self, cube_id: str) -> list[RelationRecord]:
        rows = await self._read(cypher.relations_query(cube_id), "relations")
        return [properties.relation_from_row(row) for row in rows]

    async def neighbors(
        self, memory_ids: Sequence[str], *, relations: Sequence[str] | None = None, limit: int = 50
    ) -> list[RelationRecord]:
        if not memory_ids or limit <= 0:
            return []
        rows = await self._read(cypher.neighbors_query(memory_ids, relations, limit), "neighbors")
        return [properties.relation_from_row(row) for row in rows]

    async def cubes(self) -> list[str]:
        rows = await self._read(cypher.cubes_query(), "cubes")
        return [row["cube_id"] for row in rows if row["cube_id"] is not None]
