"""EmbeddedGraphStore: memories (full records, JSON columns) and edges in SQLite tables."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from memory_store.base import GraphStore
from memory_store.embedded.bulk import insert_rows
from memory_store.embedded.db import EmbeddedProjection, runs_by_kind
from schemas.codec import float32_blob
from schemas.events import SourceRef
from schemas.memory import MemoryRecord, RelationRecord, capped_sources, source_value
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["EmbeddedGraphStore", "pack_embedding", "unpack_embedding"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_memories (
    id TEXT PRIMARY KEY, cube_id TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    memory TEXT NOT NULL, memory_type TEXT NOT NULL, key TEXT NOT NULL, tags TEXT NOT NULL,
    background TEXT NOT NULL, sources TEXT NOT NULL, metadata TEXT NOT NULL, embedding BLOB,
    embedding_model TEXT NOT NULL, extractor TEXT NOT NULL, status TEXT NOT NULL, retire_reason TEXT,
    successor_ids TEXT NOT NULL, revision INTEGER NOT NULL, confidence REAL NOT NULL, origin_event_id TEXT,
    created_at TEXT NOT NULL, created_us INTEGER NOT NULL, updated_at TEXT NOT NULL,
    valid_from TEXT, valid_to TEXT);
CREATE INDEX IF NOT EXISTS graph_memories_cube ON graph_memories (cube_id, created_us, id);
CREATE INDEX IF NOT EXISTS graph_memories_cube_status ON graph_memories (cube_id, status, created_us, id);
CREATE TABLE IF NOT EXISTS graph_edges (
    id TEXT PRIMARY KEY, cube_id TEXT NOT NULL, source_id TEXT NOT NULL, target_id TEXT NOT NULL,
    relation TEXT NOT NULL, weight REAL NOT NULL, metadata TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS graph_edges_cube ON graph_edges (cube_id);
CREATE INDEX IF NOT EXISTS graph_edges_source ON graph_edges (source_id);
CREATE INDEX IF NOT EXISTS graph_edges_target ON graph_edges (target_id);
CREATE TABLE IF NOT EXISTS graph_retirements (
    id TEXT NOT NULL, cube_id TEXT NOT NULL, reason TEXT, successor_ids TEXT NOT NULL, valid_to TEXT,
    updated_at TEXT NOT NULL, PRIMARY KEY (id, cube_id));
CREATE INDEX IF NOT EXISTS graph_retirements_cube ON graph_retirements (cube_id);
"""
"""``graph_retirements`` remembers every retirement, also one that arrived before its memory: an upsert
lands retired when its (id, cube) has one, as if the retirement came right after it. The (cube, status)
index answers a cube's current count and its pages of current memories without reading the rows it skips."""

_REMEMBER_RETIREMENT = "INSERT OR REPLACE INTO graph_retirements (reason, successor_ids, valid_to, updated_at, id, cube_id)"
_APPLY_RETIREMENTS = (
    "UPDATE graph_memories SET status='retired', retire_reason=t.reason, successor_ids=t.successor_ids,"
    " valid_to=t.valid_to, updated_at=t.updated_at FROM graph_retirements t"
    " WHERE t.id = graph_memories.id AND t.cube_id = graph_memories.cube_id"
    " AND graph_memories.id IN (SELECT value FROM json_each(?))"
)

_COLUMNS = (
    "id, cube_id, user_id, session_id, memory, memory_type, key, tags, background, sources, metadata, "
    "embedding, embedding_model, extractor, status, retire_reason, successor_ids, revision, confidence, "
    "origin_event_id, created_at, created_us, updated_at, valid_from, valid_to"
)
_INSERT = f"INSERT OR REPLACE INTO graph_memories ({_COLUMNS})"
_ROW = f"({','.join('?' * 25)})"
_SELECT = f"SELECT {_COLUMNS} FROM graph_memories"
_EDGE_COLUMNS = "id, cube_id, source_id, target_id, relation, weight, metadata, created_at"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    return _ENCODER.encode(value)


@functools.lru_cache(maxsize=32)
def _packer(code: str, n: int) -> struct.Struct:
    return struct.Struct(f"<{n}{code}")


def pack_embedding(values: Sequence[float]) -> bytes | None:
    """Embedding as a tagged blob: b"f" + float32 when that is lossless (it is for float32 models), else
    b"d" + float64; None when empty. Either way the record reads back exactly."""
    if not values:
        return None
    blob = float32_blob(values)
    if blob is not None:  # decoded from float32 bytes: lossless as they are
        return b"f" + blob
    exact = _packer("d", len(values)).pack(*values)
    as64 = np.frombuffer(exact, dtype="<f8")
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = as64.astype("<f4")
    if (as32 == as64).all():
        return b"f" + as32.tobytes()
    return b"d" + exact


def unpack_embedding(blob: bytes | None) -> tuple[float, ...]:
    """Inverse of ``pack_embedding``."""
    if not blob:
        return ()
    dtype = "<f4" if blob[:1] == b"f" else "<f8"
    return tuple(np.frombuffer(blob, dtype=dtype, offset=1).tolist())


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _sources(sources: Sequence[SourceRef]) -> list[dict[str, Any]]:
    """``model_dump(mode="json")`` of each (``source_value``)."""
    return [source_value(s) for s in sources]


def _row(m: MemoryRecord) -> tuple[Any, ...]:
    d = m.__dict__  # the field values as they are (attribute access through the model is slower)
    created, updated = d["created_at"], d["updated_at"]
    created_iso = created.isoformat()
    return (
        d["id"], d["cube_id"], d["user_id"], d["session_id"], d["memory"], d["memory_type"], d["key"],
        _json(list(d["tags"])), d["background"], _json(_sources(d["sources"])), _json(d["metadata"]),
        pack_embedding(d["embedding"]), d["embedding_model"], d["extractor"], d["status"], d["retire_reason"],
        _json(list(d["successor_ids"])), d["revision"], d["confidence"], d["origin_event_id"], created_iso,
        _micros(created), created_iso if updated is created else updated.isoformat(), _time(d["valid_from"]),
        _time(d["valid_to"]),
    )  # fmt: skip


def _record(r: sqlite3.Row | tuple[Any, ...]) -> MemoryRecord:
    return MemoryRecord(
        id=r[0], cube_id=r[1], user_id=r[2], session_id=r[3], memory=r[4], memory_type=r[5], key=r[6],
        tags=json.loads(r[7]), background=r[8], sources=json.loads(r[9]), metadata=json.loads(r[10]),
        embedding=unpack_embedding(r[11]),
        embedding_model=r[12], extractor=r[13], status=r[14], retire_reason=r[15],
        successor_ids=json.loads(r[16]), revision=r[17], confidence=r[18], origin_event_id=r[19],
        created_at=datetime.fromisoformat(r[20]), updated_at=datetime.fromisoformat(r[22]),
        valid_from=datetime.fromisoformat(r[23]) if r[23] else None,
        valid_to=datetime.fromisoformat(r[24]) if r[24] else None,
    )  # fmt: skip


class _DecodedRecords:
    """Bounded LRU of decoded records, each kept with the exact row it came from.

    A hit requires the row read now to equal the cached row (every column, the embedding blob
    included), so a record changed by any writer, in this process or another, is decoded afresh:
    the cache can be stale only in memory use, never in content.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[tuple[Any, ...], MemoryRecord]] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, row: tuple[Any, ...]) -> MemoryRecord:
        key = row[0]
        with self._lock:
            cached = self._items.get(key)
            if cached is not None and cached[0] == row:
                self._items.move_to_end(key)
                return cached[1]
        record = _record(row)
        if self.size > 0:
            with self._lock:
                self._items[key] = (tuple(row), record)
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return record


def _casefold(value: str | None) -> str | None:
    return value.casefold() if isinstance(value, str) else value


@functools.lru_cache(maxsize=16_384)
def _relation(r: tuple[Any, ...]) -> RelationRecord:
    """The edge a row holds (cached by the whole row, so a changed edge is a new entry: every search reads
    its seeds' edges again, and building each edge anew was about 5% of a LoCoMo search)."""
    return RelationRecord(
        id=r[0], cube_id=r[1], source_id=r[2], target_id=r[3], relation=r[4], weight=r[5],
        metadata=json.loads(r[6]), created_at=datetime.fromisoformat(r[7]),
    )  # fmt: skip


class EmbeddedGraphStore(EmbeddedProjection, GraphStore):
    """GraphStore over SQLite: ``graph_memories`` holds every MemoryRecord field, ``graph_edges`` the edges.

    Embeddings are kept as float64 blobs, so a record reads back exactly as it was written.
    """

    name = "graph"
    decoded_cache_size = 4096
    """Decoded records kept for repeated reads (search reads the same candidates again and again)."""

    @functools.cached_property
    def _decoded(self) -> _DecodedRecords:
        return _DecodedRecords(self.decoded_cache_size)

    def _schema(self) -> str:
        return _SCHEMA

    # -- writes (inside the batch transaction) ----------------------------------------------------------

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        """Runs of consecutive ops of one kind go to SQLite as one executemany each, in order."""
        for run in runs_by_kind(ops):
            self._apply_run(conn, run)

    def _apply_run(self, conn: sqlite3.Connection, run: Sequence[AnyOp]) -> None:
        first = run[0]
        if isinstance(first, UpsertMemory):
            upserts = [op.memory for op in run if isinstance(op, UpsertMemory)]
            insert_rows(conn, _INSERT, _ROW, [_row(m) for m in upserts])
            conn.execute(_APPLY_RETIREMENTS, (_json(list(dict.fromkeys(m.id for m in upserts))),))
        elif isinstance(first, RetireMemory):
            rows = [
                (op.reason, _json(list(op.successor_ids)), _time(op.valid_to), op.updated_at.isoformat(),
                 op.memory_id, op.cube_id)
                for op in run if isinstance(op, RetireMemory)
            ]  # fmt: skip
            insert_rows(conn, _REMEMBER_RETIREMENT, "(?,?,?,?,?,?)", rows)  # the last one of a memory wins
            conn.execute(_APPLY_RETIREMENTS, (_json(list(dict.fromkeys(row[4] for row in rows))),))
        elif isinstance(first, UpsertRelation):
            insert_rows(
                conn, f"INSERT OR REPLACE INTO graph_edges ({_EDGE_COLUMNS})", "(?,?,?,?,?,?,?,?)",
                [
                    (e.id, e.cube_id, e.source_id, e.target_id, e.relation, e.weight, _json(e.metadata),
                     e.created_at.isoformat())
                    for e in (op.relation for op in run if isinstance(op, UpsertRelation))
                ],
            )  # fmt: skip
        elif isinstance(first, ReviseMemory):
            self._revise_run(conn, [op for op in run if isinstance(op, ReviseMemory)])
        else:
            for op in run:
                match op:
                    case DropCube():
                        conn.execute("DELETE FROM graph_memories WHERE cube_id=?", (op.cube_id,))
                        conn.execute("DELETE FROM graph_edges WHERE cube_id=?", (op.cube_id,))
                        conn.execute("DELETE FROM graph_retirements WHERE cube_id=?", (op.cube_id,))

    @staticmethod
    def _revise_run(conn: sqlite3.Connection, run: Sequence[ReviseMemory]) -> None:
        """Revisions in order: the rows they touch read in one query, written in one executemany."""
        wanted = list(dict.fromkeys((op.memory_id, op.cube_id) for op in run))
        current: dict[tuple[str, str], list[Any]] = {
            (r[0], r[1]): list(r[2:])
            for r in conn.execute(
                "SELECT g.id, g.cube_id, g.memory, g.tags, g.metadata, g.sources, g.embedding, g.embedding_model"
                " FROM json_each(?) j JOIN graph_memories g"
                " ON g.id = json_extract(j.value, '$[0]') AND g.cube_id = json_extract(j.value, '$[1]')",
                (_json([list(w) for w in wanted]),),
            )
        }
        rows: dict[str, tuple[Any, ...]] = {}
        for op in run:
            row = current.get((op.memory_id, op.cube_id))
            if row is None:
                logger.debug("revise of unknown memory id=%s cube=%s ignored", op.memory_id, op.cube_id)
                continue
            metadata = {**json.loads(row[2]), **op.metadata}
            sources = json.loads(row[3])
            for source in _sources(op.sources):
                if source not in sources:
                    sources.append(source)
            sources = capped_sources(sources)
            row[:] = [
                op.memory or row[0],
                _json(list(op.tags)) if op.tags else row[1],
                _json(metadata),
                _json(sources),
                pack_embedding(op.embedding) if op.embedding else row[4],
                (op.embedding_model or row[5]) if op.embedding else row[5],
            ]
            rows.pop(op.memory_id, None)  # the id's last revision is written last (ids are global keys)
            rows[op.memory_id] = (*row, op.revision, op.updated_at.isoformat(), op.memory_id)
        conn.executemany(
            "UPDATE graph_memories SET memory=?, tags=?, metadata=?, sources=?, embedding=?, embedding_model=?,"
            " revision=?, updated_at=? WHERE id=?",
            list(rows.values()),
        )

    # -- reads ---------------------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.db.read() as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    async def get(self, memory_ids: Sequence[str], *, cube_id: str | None = None) -> list[MemoryRecord]:
        """Records of these ids (retired ones included), in the order asked; unknown ids left out."""
        wanted = list(dict.fromkeys(memory_ids))
        if not wanted:
            return []
        sql = f"{_SELECT} WHERE id IN (SELECT value FROM json_each(?))"
        args: list[Any] = [_json(wanted)]
        if cube_id is not None:
            # "+" keeps the planner on the primary key: with the cube index it scanned the whole cube
            sql += " AND +cube_id=?"
            args.append(cube_id)
        rows = await asyncio.to_thread(self._query, sql, args)
        found = {r.id: r for r in map(self._decoded.decode, rows)}
        return [found[i] for i in wanted if i in found]

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
        sql = f"{_SELECT} WHERE cube_id=?"
        args: list[Any] = [cube_id]
        if not include_retired:
            sql += " AND status='activated'"
        if memory_types is not None:
            sql += " AND memory_type IN (SELECT value FROM json_each(?))"
            args.append(_json(list(memory_types)))
        sql += " ORDER BY created_us, id LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        rows = await asyncio.to_thread(self._query, sql, args)
        return [_record(r) for r in rows]

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
        """The port's filters in one query: SQLite walks the cube's (created_us, id) index, tests the text
        with Python's casefold (the same match as the port's default) and stops after ``offset + limit``."""
        sql = f"{_SELECT} WHERE cube_id=?"
        args: list[Any] = [cube_id]
        if status != "all":
            sql += " AND status=?"
            args.append(status)
        if memory_types is not None:
            sql += " AND memory_type IN (SELECT value FROM json_each(?))"
            args.append(_json(list(memory_types)))
        if extractor:
            sql += " AND extractor=?"
            args.append(extractor)
        if text:
            sql += " AND instr(memos_casefold(memory), ?) > 0"
            args.append(text.casefold())
        sql += " ORDER BY created_us, id LIMIT ? OFFSET ?"
        args += [limit, offset]

        def query() -> list[tuple[Any, ...]]:
            with self.db.read() as conn:
                conn.create_function("memos_casefold", 1, _casefold, deterministic=True)
                return conn.execute(sql, tuple(args)).fetchall()

        return [_record(r) for r in await asyncio.to_thread(query)]

    async def count(self, cube_id: str, *, include_retired: bool = False) -> int:
        """Number of memories in a cube."""
        sql = "SELECT count(*) FROM graph_memories WHERE cube_id=?"
        if not include_retired:
            sql += " AND status='activated'"
        rows = await asyncio.to_thread(self._query, sql, [cube_id])
        return int(rows[0][0])

    async def relations(self, cube_id: str) -> list[RelationRecord]:
        """Every edge of a cube, ordered by id."""
        sql = f"SELECT {_EDGE_COLUMNS} FROM graph_edges WHERE cube_id=? ORDER BY id"
        return [_relation(r) for r in await asyncio.to_thread(self._query, sql, [cube_id])]

    async def neighbors(
        self, memory_ids: Sequence[str], *, relations: Sequence[str] | None = None, limit: int = 50
    ) -> list[RelationRecord]:
        """Edges touching any of ``memory_ids`` (either direction), optionally of given types, by id."""
        if not memory_ids or limit <= 0:
            return []
        ids = _json(list(dict.fromkeys(memory_ids)))
        sql = (
            f"SELECT {_EDGE_COLUMNS} FROM graph_edges WHERE (source_id IN (SELECT value FROM json_each(?))"
            " OR target_id IN (SELECT value FROM json_each(?)))"
        )
        args: list[Any] = [ids, ids]
        if relations is not None:
            sql += " AND relation IN (SELECT value FROM json_each(?))"
            args.append(_json(list(relations)))
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_relation(r) for r in await asyncio.to_thread(self._query, sql, args)]

    async def cubes(self) -> list[str]:
        """Ids of cubes that hold at least one memory, sorted."""
        rows = await asyncio.to_thread(
            self._query, "SELECT DISTINCT cube_id FROM graph_memories ORDER BY cube_id"
        )
        return [r[0] for r in rows]
