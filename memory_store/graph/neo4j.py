"""Neo4jGraphStore: the Cypher core over the official ``neo4j`` async driver (Bolt), in managed transactions.

``apply`` runs in one ``execute_write`` transaction: read the checkpoint, skip at or below it, else
run the op statements and write the checkpoint; Neo4j commits all of it or nothing. Reads use
``execute_read``. Neo4j Community has one database, so stores are isolated by a ``namespace``
property (``database`` selects another database where the edition has several).

The same code talks to FalkorDB's Bolt endpoint for a smoke test. That endpoint ignores rollback,
reports every error as unknown, has no Neo4j index DDL, prints doubles with 6 digits and crashes
past about 4 KB of query plus parameters: use ``create_indexes=False``, ``store_embeddings=False``
(embeddings are then not stored: reads return none) and ``max_query_bytes=3000`` (batches are split
to fit; one op that cannot fit raises PayloadTooLarge before anything is sent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from memory_store.graph import cypher, properties
from memory_store.graph.cypher_store import CypherGraphStore
from schemas.envelope import Position
from schemas.errors import ConfigError, StoreError, StoreUnavailable
from schemas.memory import MemoryRecord
from schemas.ops import AnyOp

__all__ = ["Neo4jGraphStore", "map_neo4j_errors"]

logger = logging.getLogger(__name__)

_SCHEMES = {"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"}
_INDEXES = (
    "CREATE INDEX memos_memory_key IF NOT EXISTS FOR (m:Memory) ON (m.namespace, m.id)",
    "CREATE INDEX memos_memory_cube IF NOT EXISTS FOR (m:Memory) ON (m.namespace, m.cube_id)",
    "CREATE INDEX memos_checkpoint_key IF NOT EXISTS FOR (c:Checkpoint) ON (c.namespace, c.projection, c.topic)",
    "CREATE INDEX memos_retirement_key IF NOT EXISTS FOR (t:Retirement) ON (t.namespace, t.id)",
)
_DELETE_BATCH = 5000
_READ_CHUNK = 1000


@contextmanager
def map_neo4j_errors(what: str) -> Iterator[None]:
    """Translate neo4j driver errors into StoreUnavailable (retryable) or StoreError."""
    from neo4j import exceptions as neo4j_errors

    try:
        yield
    except (
        TimeoutError,
        neo4j_errors.ServiceUnavailable,
        neo4j_errors.SessionExpired,
        neo4j_errors.TransientError,
        OSError,
    ) as exc:
        raise StoreUnavailable(f"neo4j unavailable during {what}: {type(exc).__name__}: {exc}") from exc
    except UnicodeError as exc:  # a lone surrogate: no engine can store it
        raise StoreError(f"neo4j cannot encode a value during {what}: {exc}") from exc
    except (neo4j_errors.Neo4jError, neo4j_errors.DriverError) as exc:
        raise StoreError(f"neo4j failed during {what}: {type(exc).__name__}: {exc}") from exc


def _import_driver() -> Any:
    try:
        from neo4j import AsyncGraphDatabase
    except ImportError as exc:
        raise ImportError(
            'Neo4jGraphStore needs the neo4j driver: pip install "memos-stream[neo4j]"'
        ) from exc
    return AsyncGraphDatabase


class Neo4jGraphStore(CypherGraphStore):
    """Graph projection in Neo4j (or anything speaking Bolt and this Cypher), isolated by ``namespace``.

    ``url``: ``neo4j://``, ``neo4j+s://``, ``bolt://`` ...; credentials come from ``user``/``password``
    or the URL's user info; with neither the driver connects without auth. ``driver`` lets several
    stores share one ``AsyncDriver`` (the store then does not close it).
    """

    def __init__(
        self,
        url: str = "neo4j://127.0.0.1:7687",
        user: str | None = None,
        password: str | None = None,
        *,
        namespace: str = "default",
        database: str | None = None,
        create_indexes: bool = True,
        store_embeddings: bool = True,
        max_query_bytes: int | None = None,
        timeout_s: float = 30.0,
        driver: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"Neo4jGraphStore needs a neo4j:// or bolt:// URL, got {url!r}")
        if not namespace:
            raise ConfigError("Neo4jGraphStore needs a non-empty namespace")
        if max_query_bytes is not None and max_query_bytes < 512:
            raise ConfigError(f"max_query_bytes={max_query_bytes!r} is too small to hold any query")
        self.namespace = namespace
        self.database = database
        self.create_indexes = create_indexes
        self.store_embeddings = store_embeddings
        self.max_query_bytes = max_query_bytes
        self._timeout_s = timeout_s
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self.uri = urlunsplit((parts.scheme, netloc, "", parts.query, ""))
        user = user if user is not None else (unquote(parts.username) if parts.username else None)
        password = password if password is not None else (unquote(parts.password) if parts.password else None)
        self._auth = (user, password or "") if user else None
        self._driver: Any = driver
        self._owns_driver = driver is None
        self._started = False

    def __repr__(self) -> str:
        return f"Neo4jGraphStore(uri={self.uri!r}, database={self.database!r}, namespace={self.namespace!r})"

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        if self._driver is None:
            self._driver = _import_driver().driver(
                self.uri, auth=self._auth, connection_timeout=self._timeout_s,
                max_transaction_retry_time=self._timeout_s,
            )  # fmt: skip
        try:
            with map_neo4j_errors("connect"):
                await self._driver.verify_connectivity()
            if self.create_indexes:
                async with self._session() as session:
                    for text in _INDEXES:
                        with map_neo4j_errors("create index"):
                            await (await session.run(text)).consume()
        except BaseException:
            await self.aclose()
            raise
        self._started = True
        logger.info("graph store started engine=neo4j uri=%s namespace=%s", self.uri, self.namespace)

    async def aclose(self) -> None:
        self._started = False
        driver = self._driver
        if driver is not None and self._owns_driver:
            self._driver = None
            try:
                await driver.close()
            except (OSError, RuntimeError) as exc:  # closing a dead connection is not an error
                logger.debug("neo4j close failed: %r", exc)

    # --- plumbing -------------------------------------------------------------------------------------

    def _session(self) -> Any:
        if self._driver is None:
            raise StoreError(f"{self!r} is not started")
        return self._driver.session(database=self.database)

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ns": self.namespace, **params}

    async def _read(self, query: cypher.Query, what: str) -> list[dict[str, Any]]:
        params = self._params(query.params)

        async def work(tx: Any) -> list[dict[str, Any]]:
            result = await tx.run(query.text, params)
            rows: list[dict[str, Any]] = await result.data()
            return rows

        with map_neo4j_errors(what):
            async with self._session() as session:
                rows: list[dict[str, Any]] = await session.execute_read(work)
        return rows

    def _id_chunks(self, ids: Sequence[str]) -> Iterator[list[str]]:
        budget = (self.max_query_bytes or 0) - 600  # room for the query text and other parameters
        chunk: list[str] = []
        size = 0
        for memory_id in dict.fromkeys(ids):
            cost = len(memory_id.encode()) + 4
            if chunk and (len(chunk) >= _READ_CHUNK or (self.max_query_bytes and size + cost > budget)):
                yield chunk
                chunk, size = [], 0
            chunk.append(memory_id)
            size += cost
        if chunk:
            yield chunk

    # --- projection -----------------------------------------------------------------------------------

    async def apply(self, ops: Sequence[AnyOp], position: Position, *, replay: bool = False) -> bool:
        statements = cypher.plan_ops(
            ops, self.namespace, store_embedding=self.store_embeddings, max_bytes=self.max_query_bytes
        )
        gate = cypher.checkpoint_read(self.name, position.topic, position.partition)
        mark = cypher.checkpoint_write(self.name, position)

        async def work(tx: Any) -> bool:
            if not replay:
                rows = await (await tx.run(gate.text, self._params(gate.params))).data()
                offsets = [int(row["last_offset"]) for row in rows if row["last_offset"] is not None]
                if offsets and position.offset <= max(offsets):
                    return False
            for statement in [*statements, *([] if replay else [mark])]:
                await (await tx.run(statement.text, self._params({"p": statement.p}))).consume()
            return True

        with map_neo4j_errors(f"apply {position}"):
            async with self._session() as session:
                applied: bool = await session.execute_write(work)
        logger.debug(
            "graph apply engine=neo4j topic=%s partition=%d offset=%d ops=%d applied=%s replay=%s",
            position.topic, position.partition, position.offset, len(ops), applied, replay,
        )  # fmt: skip
        return applied

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        rows = await self._read(cypher.checkpoint_read(self.name, topic, partition), "checkpoint")
        offsets = [int(row["last_offset"]) for row in rows if row["last_offset"] is not None]
        return max(offsets) if offsets else None

    # --- reads ----------------------------------------------------------------------------------------

    async def get(self, memory_ids: Sequence[str], *, cube_id: str | None = None) -> list[MemoryRecord]:
        found: dict[str, MemoryRecord] = {}
        for chunk in self._id_chunks(memory_ids):
            for row in await self._read(cypher.get_query(chunk, cube_id), "get"):
                record = properties.memory_from_props(row["m"])
                found[record.id] = record
        return [found[memory_id] for memory_id in dict.fromkeys(memory_ids) if memory_id in found]

    # --- maintenance ----------------------------------------------------------------------------------

    async def drop_namespace(self) -> None:
        """Delete every node, edge and checkpoint of this namespace, in batches (teardown). Idempotent."""
        for query in cypher.drop_namespace_statements(batch=_DELETE_BATCH):
            params = self._params(query.params)

            async def work(tx: Any, text: str = query.text, params: dict[str, Any] = params) -> int:
                record = await (await tx.run(text, params)).single()
                return int(record["deleted"]) if record is not None else 0

            while True:
                with map_neo4j_errors("drop namespace"):
                    async with self._session() as session:
                        deleted = await session.execute_write(work)
                if deleted < _DELETE_BATCH:
                    break
