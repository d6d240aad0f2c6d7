"""FalkorDBGraphStore: the Cypher core over FalkorDB's native protocol with the ``falkordb`` asyncio client.

Atomicity: FalkorDB has no multi-statement transactions over its native protocol, but one
``GRAPH.QUERY`` is all or nothing (a query that fails part way is undone) and write queries on a
graph are serialized. ``apply`` therefore sends ONE query per position: a checkpoint gate, every op
as a unit ``CALL {}`` subquery (runs of the same op kind batched with ``UNWIND``), and the checkpoint
write (see :func:`memory_store.graph.cypher.compose_apply`). Should an engine ever run it partly,
the ops are deterministic ``MERGE``/``SET`` writes keyed by stable ids and the checkpoint is written
last, so a retry converges to the same state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from memory_store.graph import cypher, properties
from memory_store.graph.cypher_store import CypherGraphStore
from schemas.envelope import Position
from schemas.errors import ConfigError, StoreError, StoreUnavailable
from schemas.memory import MemoryRecord
from schemas.ops import AnyOp

__all__ = ["FalkorDBGraphStore", "map_falkordb_errors"]

logger = logging.getLogger(__name__)

_SCHEMES = {"falkordb", "falkor", "redis"}
_DELETE_BATCH = 5000
_INDEXES = (
    "CREATE INDEX FOR (m:Memory) ON (m.id, m.namespace, m.cube_id)",
    "CREATE INDEX FOR (c:Checkpoint) ON (c.namespace, c.topic)",
    "CREATE INDEX FOR (t:Retirement) ON (t.id, t.namespace, t.cube_id)",
)


@contextmanager
def map_falkordb_errors(what: str) -> Iterator[None]:
    """Translate redis/falkordb client errors into StoreUnavailable (retryable) or StoreError."""
    from redis import exceptions as redis_errors

    try:
        yield
    except (TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"falkordb unavailable during {what}: {type(exc).__name__}: {exc}") from exc
    except UnicodeError as exc:  # a lone surrogate: no engine can store it
        raise StoreError(f"falkordb cannot encode a value during {what}: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise StoreError(f"falkordb failed during {what}: {type(exc).__name__}: {exc}") from exc


def _import_client() -> Any:
    try:
        from falkordb.asyncio import FalkorDB
    except ImportError as exc:
        raise ImportError(
            'FalkorDBGraphStore needs the falkordb client: pip install "memos-stream[neo4j]"'
        ) from exc
    return FalkorDB


class FalkorDBGraphStore(CypherGraphStore):
    """Graph projection in a FalkorDB graph, isolated by a ``namespace`` property.

    ``url``: ``falkordb://[user:password@]host:port[/graph]`` (``falkor://`` and ``redis://`` too).
    ``graph`` names the FalkorDB graph key (default from the URL path, else ``memos``); several
    namespaces share one graph.
    """

    def __init__(
        self,
        url: str = "falkordb://127.0.0.1:6379",
        *,
        namespace: str = "default",
        graph: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"FalkorDBGraphStore needs a falkordb:// URL, got {url!r}")
        if not namespace:
            raise ConfigError("FalkorDBGraphStore needs a non-empty namespace")
        self.url = url
        self.namespace = namespace
        self.graph_name = graph or parts.path.strip("/") or "memos"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout_s = timeout_s
        self._db: Any = None
        self._graph: Any = None

    def __repr__(self) -> str:
        return f"FalkorDBGraphStore(host={self._host!r}, port={self._port}, graph={self.graph_name!r}, namespace={self.namespace!r})"

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._graph is not None:
            return
        client = _import_client()
        with map_falkordb_errors("connect"):
            # The client's constructor probes the server synchronously (cluster detection).
            db = await asyncio.to_thread(
                client,
                host=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=min(self._timeout_s, 10.0),
            )
        self._db = db
        self._graph = db.select_graph(self.graph_name)
        for text in _INDEXES:
            try:
                await self._run(cypher.Query(text), what="create index")
            except StoreError as exc:
                if "already indexed" not in str(exc):
                    await self.aclose()
                    raise
        logger.info(
            "graph store started engine=falkordb graph=%s namespace=%s", self.graph_name, self.namespace
        )

    async def aclose(self) -> None:
        db, self._db, self._graph = self._db, None, None
        if db is not None:
            try:
                await db.connection.aclose()
            except (OSError, RuntimeError) as exc:  # closing a dead connection is not an error
                logger.debug("falkordb close failed: %r", exc)

    # --- plumbing -------------------------------------------------------------------------------------

    async def _run(self, query: cypher.Query, *, what: str, read_only: bool = False) -> list[dict[str, Any]]:
        if self._graph is None:
            raise StoreError(f"{self!r} is not started")
        params = {"ns": self.namespace, **query.params}
        with map_falkordb_errors(what):
            if read_only:
                result = await self._graph.ro_query(query.text, params)
            else:
                result = await self._graph.query(query.text, params)
        names = [column[1] for column in result.header]
        return [dict(zip(names, row, strict=True)) for row in result.result_set]

    async def _read(self, query: cypher.Query, what: str) -> list[dict[str, Any]]:
        # ro_query fails on a graph key that does not exist yet; reads then see an empty graph.
        try:
            return await self._run(query, what=what, read_only=True)
        except StoreError as exc:
            if "empty key" in str(exc):
                return []
            raise

    # --- projection -----------------------------------------------------------------------------------

    async def apply(self, ops: Sequence[AnyOp], position: Position, *, replay: bool = False) -> bool:
        statements = cypher.plan_ops(ops, self.namespace)
        query = cypher.compose_apply(statements, self.name, position, replay=replay)
        rows = await self._run(query, what=f"apply {position}")
        applied = bool(rows and rows[0]["applied"])
        logger.debug(
            "graph apply engine=falkordb topic=%s partition=%d offset=%d ops=%d applied=%s replay=%s",
            position.topic, position.partition, position.offset, len(ops), applied, replay,
        )  # fmt: skip
        return applied

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        rows = await self._read(cypher.checkpoint_read(self.name, topic, partition), "checkpoint")
        offsets = [int(row["last_offset"]) for row in rows if row["last_offset"] is not None]
        return max(offsets) if offsets else None

    # --- reads ----------------------------------------------------------------------------------------

    async def get(self, memory_ids: Sequence[str], *, cube_id: str | None = None) -> list[MemoryRecord]:
        wanted = list(dict.fromkeys(memory_ids))
        if not wanted:
            return []
        rows = await self._read(cypher.get_query(wanted, cube_id), "get")
        found = {record.id: record for record in (properties.memory_from_props(row["m"]) for row in rows)}
        return [found[memory_id] for memory_id in wanted if memory_id in found]

    # --- maintenance ----------------------------------------------------------------------------------

    async def drop_namespace(self) -> None:
        """Delete every node, edge and checkpoint of this namespace (test teardown). Idempotent."""
        for query in cypher.drop_namespace_statements(batch=_DELETE_BATCH):
            while True:
                try:
                    rows = await self._run(query, what="drop namespace")
                except StoreError as exc:
                    if "empty key" in str(exc):
                        return
                    raise
                if not rows or int(rows[0]["deleted"]) < _DELETE_BATCH:
                    break
