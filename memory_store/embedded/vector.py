"""EmbeddedVectorStore: float32 blobs in SQLite, per-cube normalized matrices in memory, HNSW for big cubes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.base import Ask, VectorStore
from memory_store.embedded.ann import CubeVectors, Hnsw, SavedIndex
from memory_store.embedded.bulk import insert_rows
from memory_store.embedded.db import EmbeddedProjection, Synchronous
from memory_store.embedded.vector_journal import JOURNAL_SCHEMA, VectorJournal
from memory_store.embedded.vector_rows import F32, SCHEMA, Change, Drop, Put, Status, as_float32
from schemas.codec import float32_blob
from schemas.errors import DimensionMismatch, StoreError
from schemas.memory import ScoredMemory
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory

__all__ = ["EmbeddedVectorStore"]

logger = logging.getLogger(__name__)

class EmbeddedVectorStore(VectorJournal, EmbeddedProjection, VectorStore):
    """VectorStore over SQLite (``vector_items``) with the search structures held in memory.

    Every cube keeps a normalized float32 matrix of its current vectors; searches below
    ``ann_threshold`` vectors are exact (one matrix product). Above it, an hnswlib index answers,
    built by the first search that finds more than ``ann_pending_limit`` vectors unindexed (or by
    ``build_index``), on a copy and off the lock; vectors not yet indexed are searched exactly, so
    results never lag the writes. Indexes are saved next to the database (``<db>.hnsw/``) after a
    build and on close, and reused (checked, then topped up) when the store starts again.
    In-memory state changes only after the SQLite transaction committed. Another process's writes to the
    same file are seen by the next search here (``VectorJournal``).
    """

    name = "vector"

    def __init__(
        self,
        url: str | Path,
        *,
        ann_threshold: int = 20_000,
        ann_pending_limit: int = 2_048,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        hnsw_ef_search: int = 256,
        index_threads: int = -1,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = 30.0,
        namespace: str = "",
    ) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout_s=busy_timeout_s, namespace=namespace)
        self.ann_threshold = ann_threshold
        self.ann_pending_limit = ann_pending_limit
        self.hnsw = Hnsw(m=hnsw_m, ef_construction=hnsw_ef_construction, ef_search=hnsw_ef_search,
                         threads=index_threads)  # fmt: skip
        self._cubes: dict[str, CubeVectors] = {}
        self._where: dict[str, str] = {}
        """Cube of every memory that has a vector in memory (ids are global)."""
        self._types: dict[str, int] = {}
        self._state_lock = threading.RLock()
        self._staged: list[Change] = []
        self._staged_dims: dict[str, int | None] = {}
        self._unsaved: set[str] = set()
        """Cubes whose index changed since it was last saved."""

    def _schema(self) -> str:
        return SCHEMA + JOURNAL_SCHEMA

    # -- in-memory state -----------------------------------------------------------------------------

    def _on_open(self) -> None:
        self._journal_start()
        self._load_all()

    def _load_all(self) -> None:
        with self._state_lock:
            self._cubes.clear()
            self._where.clear()
        with self.db.read() as conn:
            cursor = conn.execute(
                "SELECT memory_id, cube_id, memory_type, status, embedding FROM vector_items"
                " WHERE embedding IS NOT NULL ORDER BY cube_id, rowid"
            )
            batch: list[tuple[Any, ...]] = []
            loaded = 0
            for row in cursor:
                if batch and row[1] != batch[-1][1]:
                    loaded += self._load_cube(batch)
                    batch = []
                batch.append(row)
            if batch:
                loaded += self._load_cube(batch)
        logger.info("loaded vectors path=%s cubes=%d vectors=%d", self.db.path, len(self._cubes), loaded)
        with self._state_lock:
            self._unsaved.clear()
            for cube_id, cube in self._cubes.items():
                if cube.live > self.ann_threshold:
                    self._load_index(cube_id, cube)

    # -- saved indexes -------------------------------------------------------------------------------

    def _saved(self, cube_id: str) -> SavedIndex | None:
        """Files of the cube's saved index (None for an in-memory database)."""
        if self.db.path == ":memory:":
            return None
        digest = hashlib.sha256(cube_id.encode()).hexdigest()[:32]
        return SavedIndex(Path(f"{self.db.path}.hnsw") / digest)

    def _load_index(self, cube_id: str, cube: CubeVectors) -> None:
        saved = self._saved(cube_id)
        loaded = saved.load(cube) if saved is not None else None
        if loaded is None:
            return
        index, labels, meta = loaded
        reused = cube.adopt(index, labels)
        logger.info("reused saved index cube=%s vectors=%d of=%d pending=%d saved_at=%s", cube_id, reused,
                    len(labels), cube.pending, meta.get("applied"))  # fmt: skip
        if reused and cube.pending:
            self._unsaved.add(cube_id)

    def _applied(self) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT topic, partition, offset FROM checkpoints WHERE projection=?", (self.name,)
            ).fetchall()
        return {f"{topic}/{partition}": offset for topic, partition, offset in rows}

    def _save_index(self, cube_id: str) -> None:
        """Save the cube's index now (caller holds the state lock); failures are logged, not raised."""
        cube = self._cubes.get(cube_id)
        saved = self._saved(cube_id)
        index = cube.index if cube is not None else None
        if saved is None or cube is None or index is None:
            return
        try:
            saved.save(cube, index, self._applied())
            self._unsaved.discard(cube_id)
        except (OSError, RuntimeError, StoreError) as exc:
            logger.warning("could not save index cube=%s path=%s: %s", cube_id, saved.index_path, exc)

    def _save_all(self) -> None:
        if not self.db.is_open:
            return
        with self._state_lock:
            for cube_id in sorted(self._unsaved):
                self._save_index(cube_id)

    # -- writes (inside the batch transaction) ----------------------------------------------------------

    def _begin_batch(self) -> None:
        self._staged = []
        self._staged_dims = {}

    def _abort_batch(self) -> None:
        self._journal_mark = None
        self._staged = []
        self._staged_dims = {}

    def _commit_batch(self) -> None:
        with self._state_lock:
            self._journal_committed()
            self._publish_all(self._staged)
        self._staged = []
        self._staged_dims = {}

    def _dim_for(self, cube_id: str) -> int | None:
        if cube_id in self._staged_dims:
            return self._staged_dims[cube_id]
        with self._state_lock:
            cube = self._cubes.get(cube_id)
            dim = cube.dim if cube is not None and cube.live > 0 else None
        if dim is not None:  # the committed state stands until this batch commits
            self._staged_dims[cube_id] = dim
        return dim

    def _check_dim(self, cube_id: str, vector: F32, memory_id: str) -> None:
        dim = self._dim_for(cube_id)
        if dim is None:
            self._staged_dims[cube_id] = len(vector)
        elif dim != len(vector):
            raise DimensionMismatch(
                f"embedding of memory {memory_id!r} has dimension {len(vector)}, cube {cube_id!r} holds {dim}"
            )

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        """Runs of consecutive upserts (of one cube), revisions or retirements go to SQLite in one
        ``executemany`` each, in order."""
        start = 0
        while start < len(ops):
            first = ops[start]
            end = start + 1
            if isinstance(first, UpsertMemory):
                cube_id = first.memory.cube_id
                while end < len(ops) and type(op := ops[end]) is UpsertMemory and op.memory.cube_id == cube_id:
                    end += 1
                self._upsert_run(conn, ops[start:end])  # type: ignore[arg-type]
            elif isinstance(first, (ReviseMemory, RetireMemory)):
                while end < len(ops) and type(ops[end]) is type(first):
                    end += 1
                if isinstance(first, ReviseMemory):
                    self._revise_run(conn, [op for op in ops[start:end] if isinstance(op, ReviseMemory) and op.embedding])
                else:
                    self._retire_run(conn, ops[start:end])  # type: ignore[arg-type]
            elif isinstance(first, DropCube):
                conn.execute("DELETE FROM vector_items WHERE cube_id=?", (first.cube_id,))
                self._staged.append(Drop(first.cube_id))
                self._staged_dims[first.cube_id] = None
            start = end
        self._journal_write(conn)

    def _retire_run(self, conn: sqlite3.Connection, run: Sequence[RetireMemory]) -> None:
        """A retirement before its memory leaves a tombstone row (no vector): the memory lands retired.

        Each is staged as a status change: where its row did not change (already retired, or the id is
        another cube's) publishing it changes nothing, as the in-memory state agrees already."""
        insert_rows(
            conn, "INSERT INTO vector_items (memory_id, cube_id, memory_type, status, embedding)",
            "(?,?,'','retired',NULL)", [(op.memory_id, op.cube_id) for op in run],
            " ON CONFLICT (memory_id) DO UPDATE SET status='retired' WHERE cube_id=excluded.cube_id AND status<>'retired'",
        )
        self._staged.extend(Status(op.memory_id, op.cube_id, False) for op in run)

    def _upsert_run(self, conn: sqlite3.Connection, run: Sequence[UpsertMemory]) -> None:
        """Upserts of one cube in few statements (``insert_rows``); a memory already retired there stays retired.

        Embeddings decoded from float32 bytes are stored as they are, and their vectors are views into
        one array made from all of them (no array per memory)."""
        cube_id = run[0].memory.cube_id
        memories = [op.memory for op in run]
        retired = {
            r[0]
            for r in conn.execute(
                "SELECT memory_id FROM vector_items WHERE memory_id IN (SELECT value FROM json_each(?))"
                " AND +cube_id=? AND status='retired'",  # "+": the primary key, not a scan of the cube
                (json.dumps([m.id for m in memories]), cube_id),
            )
        }
        blobs: list[bytes | None] = []
        size = -1  # bytes of the vectors checked against the cube's dimension so far
        for m in memories:
            embedding = m.embedding
            blob = float32_blob(embedding)
            if not blob:
                blob = as_float32(embedding).tobytes() if len(embedding) else None
            if blob is not None and len(blob) != size:
                self._check_dim(cube_id, np.frombuffer(blob, dtype="<f4"), m.id)
                size = len(blob)
            blobs.append(blob)
        vectors = self._vectors(blobs, size)
        rows = []
        staged = self._staged
        for m, blob, vector in zip(memories, blobs, vectors, strict=True):
            status = "retired" if m.id in retired else m.status
            rows.append((m.id, cube_id, m.memory_type, status, blob))
            staged.append(Put(m.id, cube_id, vector, m.memory_type, status == "activated"))
        insert_rows(conn, "INSERT OR REPLACE INTO vector_items (memory_id, cube_id, memory_type, status, embedding)",
                    "(?,?,?,?,?)", rows)

    @staticmethod
    def _vectors(blobs: Sequence[bytes | None], size: int) -> list[F32 | None]:
        """The float32 vector of each blob (None for none): rows of one array when all have ``size`` bytes."""
        present = [b for b in blobs if b is not None]
        if not present or any(len(b) != size for b in present):
            return [None if b is None else np.frombuffer(b, dtype="<f4") for b in blobs]
        matrix = np.frombuffer(b"".join(present), dtype="<f4").reshape(len(present), size // 4)
        rows = iter(matrix)
        return [None if b is None else next(rows) for b in blobs]

    def _revise_run(self, conn: sqlite3.Connection, run: Sequence[ReviseMemory]) -> None:
        """New vectors of known memories, in order (a revision of an unknown memory is ignored)."""
        if not run:
            return
        pairs = json.dumps(list(dict.fromkeys((op.memory_id, op.cube_id) for op in run)))
        known = {
            (r[0], r[1]): (r[2], r[3])
            for r in conn.execute(
                "SELECT v.memory_id, v.cube_id, v.memory_type, v.status FROM json_each(?) j JOIN vector_items v"
                " ON v.memory_id = json_extract(j.value, '$[0]') AND v.cube_id = json_extract(j.value, '$[1]')",
                (pairs,),
            )
        }
        rows = []
        for op in run:
            row = known.get((op.memory_id, op.cube_id))
            if row is None:
                continue
            vector = as_float32(op.embedding)
            self._check_dim(op.cube_id, vector, op.memory_id)
            rows.append((vector.tobytes(), op.memory_id))
            self._staged.append(Put(op.memory_id, op.cube_id, vector, row[0], row[1] == "activated"))
        conn.executemany("UPDATE vector_items SET embedding=? WHERE memory_id=?", rows)

    # -- reads ---------------------------------------------------------------------------------------

    def _ensure_index(self, cube_id: str, *, force: bool = False) -> None:
        """Bring the cube's HNSW index up to date when it is due (always, with ``force``).

        A first build, or one far behind, runs on a copy of the vectors without holding the state
        lock, so writes and other searches carry on (exactly) meanwhile; a small catch-up is done in
        place under the lock.
        """
        with self._state_lock:
            cube = self._cubes.get(cube_id)
            if cube is None or cube.building or cube.live <= self.ann_threshold or cube.pending == 0:
                return
            if not force and cube.pending <= self.ann_pending_limit:
                return
            if cube.has_index and cube.pending <= max(self.ann_pending_limit, cube.indexed // 4):
                cube.catch_up()
                self._unsaved.add(cube_id)
                return
            build = cube.plan()
            cube.building = True
        index = None
        try:
            index = build.build()
        finally:
            with self._state_lock:
                cube.building = False
                if index is not None and self._cubes.get(cube_id) is cube and cube.install(build, index):
                    self._save_index(cube_id)

    def _search_sync(
        self, cube_id: str, queries: Sequence[F32], asks: Sequence[Ask], include_retired: bool
    ) -> list[list[list[ScoredMemory]]]:
        """Per query, per ask (k, memory types), the hits."""
        self._refresh()
        self._ensure_index(cube_id)
        with self._state_lock:
            cube = self._cubes.get(cube_id)
            if cube is None or cube.live == 0:
                return [[[] for _ in asks] for _ in queries]
            for query in queries:
                if len(query) != cube.dim:
                    raise DimensionMismatch(
                        f"query vector has dimension {len(query)}, cube {cube_id!r} holds {cube.dim}"
                    )
            found: list[list[list[tuple[str, float]]]] = [[] for _ in queries]
            for k, memory_types in asks:
                codes = None if memory_types is None else [self._types[t] for t in memory_types if t in self._types]
                for n, query in enumerate(queries):
                    found[n].append([] if k <= 0 or codes == [] else cube.search(
                        query, k, codes=codes, include_retired=include_retired, use_index=cube.live > self.ann_threshold))
        return [[[ScoredMemory(memory_id=i, cube_id=cube_id, score=s, retriever="vector") for i, s in hits]
                 for hits in per_ask] for per_ask in found]  # fmt: skip

    async def search(
        self,
        cube_id: str,
        vector: Sequence[float],
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        """Top ``k`` memories by cosine similarity (best first, ties by id); [] for a cube without vectors.

        Raises DimensionMismatch when ``vector`` does not fit the cube's dimension.
        """
        return (await self.search_each(cube_id, vector, [Ask(k, memory_types)], include_retired=include_retired))[0]

    async def search_each(
        self, cube_id: str, vector: Sequence[float], asks: Sequence[Ask], *, include_retired: bool = False
    ) -> list[list[ScoredMemory]]:
        """``search`` of ``vector`` for each ask, answered together (one thread hop, one look at the journal)."""
        if all(a.k <= 0 for a in asks):
            return [[] for _ in asks]
        found = await asyncio.to_thread(self._search_sync, cube_id, [as_float32(vector)], asks, include_retired)
        return found[0]

    async def search_many(
        self,
        cube_id: str,
        vectors: Sequence[Sequence[float]],
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[list[ScoredMemory]]:
        """``search`` for each of ``vectors``, answered together (one thread hop, one look at the journal)."""
        if k <= 0 or not vectors:
            return [[] for _ in vectors]
        queries = [as_float32(vector) for vector in vectors]
        found = await asyncio.to_thread(self._search_sync, cube_id, queries, [Ask(k, memory_types)], include_retired)
        return [per_ask[0] for per_ask in found]

    async def aclose(self) -> None:
        """Save the indexes changed since their last save, then close the database."""
        await asyncio.to_thread(self._save_all)
        await super().aclose()

    async def dimension(self, cube_id: str) -> int | None:
        """Dimension of the cube's vectors, or None when it has none."""
        await asyncio.to_thread(self._refresh)
        cube = self._cubes.get(cube_id)  # no lock: must not block the event loop behind an index build
        return cube.dim if cube is not None and cube.live > 0 else None

    async def build_index(self, cube_id: str | None = None) -> None:
        """Index every unindexed vector of cubes above ``ann_threshold`` now (else the next search does)."""

        def build() -> None:
            with self._state_lock:
                cube_ids = [cube_id] if cube_id is not None else list(self._cubes)
            for cid in cube_ids:
                self._ensure_index(cid, force=True)

        await asyncio.to_thread(build)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per cube: live vectors, vectors in the ANN index, vectors waiting to be indexed."""
        with self._state_lock:
            return {
                cid: {"live": c.live, "indexed": c.indexed, "pending": c.pending}
                for cid, c in self._cubes.items()
            }
