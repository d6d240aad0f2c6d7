"""EmbeddedKeywordIndex: SQLite FTS5 BM25 over memory text, one docs table and FTS5 index per cube."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memory_store.base import KeywordIndex
from memory_store.embedded.db import EmbeddedProjection, Synchronous
from schemas.errors import StoreError
from schemas.memory import ScoredMemory
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory
from schemas.text import index_text, query_tokens

__all__ = ["EmbeddedKeywordIndex", "fts_query", "fts_text"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_cubes (cube_id TEXT PRIMARY KEY, slot TEXT NOT NULL UNIQUE);
"""

_CUBE_SCHEMA = """
CREATE TABLE IF NOT EXISTS "kw_docs_{slot}" (
    doc_id INTEGER PRIMARY KEY, memory_id TEXT NOT NULL UNIQUE, memory_type TEXT NOT NULL,
    status TEXT NOT NULL, body TEXT, title TEXT);
CREATE INDEX IF NOT EXISTS "kw_docs_{slot}_type" ON "kw_docs_{slot}" (memory_type, status);
CREATE VIRTUAL TABLE IF NOT EXISTS "kw_fts_{slot}" USING fts5(
    body, title, content='kw_docs_{slot}', content_rowid='doc_id',
    tokenize = 'porter unicode61 remove_diacritics 2');
"""
"""A cube's tables. ``body`` NULL marks a tombstone: a retirement that arrived before its memory."""

_WEIGHTS = "1.0, 0.5"  # bm25 weights of the body and title columns
_MAX_TERMS = 64


def fts_text(text: str) -> str:
    """Text as indexed: ``schemas.text.index_text`` (lower-cased words, CJK runs as character bigrams)."""
    return index_text(text)


def fts_query(text: str) -> str:
    """A safe FTS5 expression for arbitrary user text: its tokens ORed, each a quoted phrase, or ''.

    Tokens are ``schemas.text.query_tokens`` (letters and digits only), so quotes, parentheses,
    operators (AND, OR, NOT, NEAR), ``*``, ``:``, ``^`` and emoji never reach the FTS5 parser as syntax.
    """
    return " OR ".join(f'"{t}"' for t in query_tokens(text, limit=_MAX_TERMS))


@functools.lru_cache(maxsize=4096)
def _slot(cube_id: str) -> str:
    """Table-name suffix of a cube: 16 hex digits of its hash (the name itself may hold anything)."""
    return hashlib.blake2b(cube_id.encode(), digest_size=8).hexdigest()


class EmbeddedKeywordIndex(EmbeddedProjection, KeywordIndex):
    """KeywordIndex over SQLite FTS5 (porter + unicode61 over ``schemas.text`` tokens), tables per cube.

    Each cube has its own docs table and external-content FTS5 index, so its BM25 statistics
    (document count, average length, term frequencies) are its own: a cube's ranking never changes
    because another cube grew, and dropping a cube drops its two tables without touching any other
    cube's pages. Scores are ``-bm25`` (higher is better).

    A retirement that arrives before its memory (the fine phase of an async add can reach the log
    before the fast phase) leaves a tombstone row; the memory then lands retired. Retirement is
    terminal: a memory once retired stays retired when it is added again.
    """

    name = "keyword"

    def __init__(
        self,
        url: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = 30.0,
        namespace: str = "",
    ) -> None:
        super().__init__(url, synchronous=synchronous, busy_timeout_s=busy_timeout_s, namespace=namespace)
        self._slots: dict[str, str] = {}
        """Cubes whose tables exist (committed), by cube id."""
        self._staged_slots: dict[str, str | None] = {}
        self._slots_lock = threading.Lock()

    def _schema(self) -> str:
        return _SCHEMA

    def _on_open(self) -> None:
        with self.db.read() as conn:
            rows = conn.execute("SELECT cube_id, slot FROM keyword_cubes").fetchall()
        with self._slots_lock:
            self._slots = {cube_id: slot for cube_id, slot in rows}

    # -- cube tables ---------------------------------------------------------------------------------

    def _known_slot(self, cube_id: str) -> str | None:
        if cube_id in self._staged_slots:
            return self._staged_slots[cube_id]
        with self._slots_lock:
            return self._slots.get(cube_id)

    def _ensure_cube(self, conn: sqlite3.Connection, cube_id: str) -> str:
        slot = self._known_slot(cube_id)
        if slot is not None:
            return slot
        slot = _slot(cube_id)
        owner = conn.execute("SELECT cube_id FROM keyword_cubes WHERE slot=?", (slot,)).fetchone()
        if owner is not None and owner[0] != cube_id:
            raise StoreError(f"cubes {owner[0]!r} and {cube_id!r} hash to the same keyword tables {slot}")
        conn.execute("INSERT OR IGNORE INTO keyword_cubes (cube_id, slot) VALUES (?,?)", (cube_id, slot))
        for statement in _CUBE_SCHEMA.format(slot=slot).split(";"):
            if statement.strip():
                conn.execute(statement)
        self._staged_slots[cube_id] = slot
        return slot

    def _begin_batch(self) -> None:
        self._staged_slots = {}

    def _abort_batch(self) -> None:
        self._staged_slots = {}

    def _commit_batch(self) -> None:
        with self._slots_lock:
            for cube_id, slot in self._staged_slots.items():
                if slot is None:
                    self._slots.pop(cube_id, None)
                else:
                    self._slots[cube_id] = slot
        self._staged_slots = {}

    # -- writes (inside the batch transaction) ----------------------------------------------------------

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        run: list[UpsertMemory] = []
        for op in ops:
            if isinstance(op, UpsertMemory):
                if run and run[-1].memory.cube_id != op.memory.cube_id:
                    self._upsert_run(conn, run)
                    run = []
                run.append(op)
                continue
            if run:
                self._upsert_run(conn, run)
                run = []
            match op:
                case ReviseMemory():
                    if op.memory:
                        self._revise(conn, op)
                case RetireMemory():
                    self._retire(conn, op)
                case DropCube():
                    self._drop(conn, op.cube_id)
                case _:
                    pass
        if run:
            self._upsert_run(conn, run)

    def _upsert_run(self, conn: sqlite3.Connection, run: Sequence[UpsertMemory]) -> None:
        """Upserts of one cube: new memories in two executemany calls, known ones one at a time."""
        slot = self._ensure_cube(conn, run[0].memory.cube_id)
        latest = {op.memory.id: op.memory for op in run}  # a later upsert of the same id wins
        known = {
            r[0]: r
            for r in conn.execute(
                f'SELECT memory_id, doc_id, status, body, title, memory_type FROM "kw_docs_{slot}"'
                " WHERE memory_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(latest)),),
            )
        }
        fresh = [m for i, m in latest.items() if i not in known]
        if fresh:
            top = conn.execute(f'SELECT coalesce(max(doc_id), 0) FROM "kw_docs_{slot}"').fetchone()[0]
            rows = [
                (top + n + 1, m.id, m.memory_type, m.status, fts_text(m.memory), fts_text(m.key))
                for n, m in enumerate(fresh)
            ]
            conn.executemany(
                f'INSERT INTO "kw_docs_{slot}" (doc_id, memory_id, memory_type, status, body, title)'
                " VALUES (?,?,?,?,?,?)",
                rows,
            )
            conn.executemany(
                f'INSERT INTO "kw_fts_{slot}" (rowid, body, title) VALUES (?,?,?)',
                [(r[0], r[4], r[5]) for r in rows],
            )
        for memory_id, old in known.items():
            m = latest[memory_id]
            doc_id, old_status, old_body, old_title, old_type = old[1:]
            status = "retired" if old_status == "retired" else m.status
            body, title = fts_text(m.memory), fts_text(m.key)
            if (old_status, old_body, old_title, old_type) == (status, body, title, m.memory_type):
                continue
            if old_body is not None and (old_body, old_title) != (body, title):
                self._unindex(conn, slot, doc_id, old_body, old_title)
            conn.execute(
                f'UPDATE "kw_docs_{slot}" SET memory_type=?, status=?, body=?, title=? WHERE doc_id=?',
                (m.memory_type, status, body, title, doc_id),
            )
            if old_body is None or (old_body, old_title) != (body, title):
                conn.execute(
                    f'INSERT INTO "kw_fts_{slot}" (rowid, body, title) VALUES (?,?,?)', (doc_id, body, title)
                )

    @staticmethod
    def _unindex(conn: sqlite3.Connection, slot: str, doc_id: int, body: str, title: str) -> None:
        conn.execute(
            f'INSERT INTO "kw_fts_{slot}" ("kw_fts_{slot}", rowid, body, title) VALUES (\'delete\',?,?,?)',
            (doc_id, body, title),
        )

    def _revise(self, conn: sqlite3.Connection, op: ReviseMemory) -> None:
        slot = self._known_slot(op.cube_id)
        if slot is None:
            return
        row = conn.execute(
            f'SELECT doc_id, body, title FROM "kw_docs_{slot}" WHERE memory_id=?', (op.memory_id,)
        ).fetchone()
        if row is None or row[1] is None:
            return
        doc_id, old_body, title = row
        body = fts_text(op.memory)
        if body == old_body:
            return
        self._unindex(conn, slot, doc_id, old_body, title)
        conn.execute(f'UPDATE "kw_docs_{slot}" SET body=? WHERE doc_id=?', (body, doc_id))
        conn.execute(
            f'INSERT INTO "kw_fts_{slot}" (rowid, body, title) VALUES (?,?,?)', (doc_id, body, title)
        )

    def _retire(self, conn: sqlite3.Connection, op: RetireMemory) -> None:
        slot = self._ensure_cube(conn, op.cube_id)
        conn.execute(
            f'INSERT INTO "kw_docs_{slot}" (memory_id, memory_type, status, body, title)'
            " VALUES (?, '', 'retired', NULL, NULL) ON CONFLICT (memory_id) DO UPDATE SET status='retired'",
            (op.memory_id,),
        )

    def _drop(self, conn: sqlite3.Connection, cube_id: str) -> None:
        slot = self._known_slot(cube_id)
        if slot is None:
            row = conn.execute("SELECT slot FROM keyword_cubes WHERE cube_id=?", (cube_id,)).fetchone()
            if row is None:
                return
            slot = row[0]
        conn.execute(f'DROP TABLE IF EXISTS "kw_fts_{slot}"')
        conn.execute(f'DROP TABLE IF EXISTS "kw_docs_{slot}"')
        conn.execute("DELETE FROM keyword_cubes WHERE cube_id=?", (cube_id,))
        self._staged_slots[cube_id] = None

    # -- reads ---------------------------------------------------------------------------------------

    def _search_sync(
        self, slot: str, expression: str, k: int, types: str | None, include_retired: bool
    ) -> list[tuple[Any, ...]]:
        sql = (
            f'SELECT d.memory_id, -bm25("kw_fts_{slot}", {_WEIGHTS}) AS score FROM "kw_fts_{slot}"'
            f' JOIN "kw_docs_{slot}" d ON d.doc_id = "kw_fts_{slot}".rowid'
            f' WHERE "kw_fts_{slot}" MATCH ?'
        )
        args: list[Any] = [expression]
        probe = f'SELECT 1 FROM "kw_docs_{slot}" WHERE memory_type IN (SELECT value FROM json_each(?))'
        if not include_retired:
            sql += " AND d.status = 'activated'"
            probe += " AND status = 'activated'"
        if types is not None:
            sql += " AND d.memory_type IN (SELECT value FROM json_each(?))"
            args.append(types)
        sql += " ORDER BY score DESC, d.memory_id LIMIT ?"
        args.append(k)
        with self.db.read() as conn:
            try:
                if types is not None:  # most cubes hold no memories of most types: skip the BM25 scan then
                    if conn.execute(probe + " LIMIT 1", (types,)).fetchone() is None:
                        return []
                return conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # the cube was dropped since the slot was looked up
                    return []
                raise

    async def search(
        self,
        cube_id: str,
        query: str,
        *,
        k: int = 10,
        memory_types: Sequence[str] | None = None,
        include_retired: bool = False,
    ) -> list[ScoredMemory]:
        """Top ``k`` memories by BM25 (higher is better, ties by id). A query with no words returns []."""
        expression = fts_query(query)
        if not expression or k <= 0:
            return []
        with self._slots_lock:
            slot = self._slots.get(cube_id)
        if slot is None:
            return []
        k = min(k, 2**31 - 1)
        types = None if memory_types is None else json.dumps(list(memory_types))
        rows = await asyncio.to_thread(self._search_sync, slot, expression, k, types, include_retired)
        return [
            ScoredMemory(memory_id=r[0], cube_id=cube_id, score=float(r[1]), retriever="keyword")
            for r in rows
        ]
