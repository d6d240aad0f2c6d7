"""EmbeddedKeywordIndex: SQLite FTS5 BM25 over memory text, with CJK split into characters."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from memory_store.base import KeywordIndex
from memory_store.embedded.db import EmbeddedProjection
from schemas.memory import ScoredMemory
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["EmbeddedKeywordIndex", "fts_query", "fts_text"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_docs (
    doc_id INTEGER PRIMARY KEY, memory_id TEXT NOT NULL UNIQUE, cube_id TEXT NOT NULL,
    memory_type TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS keyword_docs_cube ON keyword_docs (cube_id);
CREATE INDEX IF NOT EXISTS keyword_docs_cube_type ON keyword_docs (cube_id, memory_type, status);
CREATE VIRTUAL TABLE IF NOT EXISTS keyword_fts USING fts5(
    cube, body, title, tokenize = 'porter unicode61 remove_diacritics 2');
"""

_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_CJK_CHAR = re.compile(f"([{_CJK}])")
_WORD = re.compile(r"[^\W_]+")
_MAX_TERMS = 64
_WEIGHTS = "0.0, 1.0, 0.5"  # bm25 weights of the cube, body and title columns


def fts_text(text: str) -> str:
    """Text as indexed: every CJK character becomes its own token (unicode61 keeps CJK runs whole)."""
    return _CJK_CHAR.sub(r" \1 ", text)


def fts_query(text: str) -> str:
    """A safe FTS5 expression for arbitrary user text: its words ORed, each a quoted phrase, or ''.

    Only letters and digits survive, so quotes, parentheses, operators (AND, OR, NOT, NEAR), ``*``,
    ``:``, ``^`` and emoji can never reach the FTS5 parser as syntax. A CJK run becomes a phrase of its
    characters, which matches the characters adjacently, as they were indexed.
    """
    terms: list[str] = []
    for match in _WORD.finditer(text):
        phrase = " ".join(fts_text(match.group()).split())
        term = f'"{phrase}"'
        if term not in terms:
            terms.append(term)
        if len(terms) >= _MAX_TERMS:
            break
    return " OR ".join(terms)


@functools.lru_cache(maxsize=4096)
def _cube_token(cube_id: str) -> str:
    """A digits-only token naming the cube (digits pass the porter stemmer unchanged)."""
    return str(int.from_bytes(hashlib.blake2b(cube_id.encode(), digest_size=12).digest(), "big"))


class EmbeddedKeywordIndex(EmbeddedProjection, KeywordIndex):
    """KeywordIndex over one FTS5 table (porter + unicode61, CJK per character) and a docs table.

    The FTS row carries a digits-only cube token, so a search touches only that cube's postings; BM25
    statistics are those of the whole table. Scores are ``-bm25`` (higher is better).
    """

    name = "keyword"

    def _schema(self) -> str:
        return _SCHEMA

    # -- writes (inside the batch transaction) ----------------------------------------------------------

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        for op in ops:
            match op:
                case UpsertMemory():
                    m = op.memory
                    self._put(conn, m.id, m.cube_id, m.memory_type, m.status, m.memory, m.key)
                case ReviseMemory():
                    if op.memory:
                        row = conn.execute(
                            "SELECT doc_id, cube_id FROM keyword_docs WHERE memory_id=? AND cube_id=?",
                            (op.memory_id, op.cube_id),
                        ).fetchone()
                        if row is not None:
                            conn.execute(
                                "UPDATE keyword_fts SET body=? WHERE rowid=?", (fts_text(op.memory), row[0])
                            )
                case RetireMemory():
                    conn.execute(
                        "UPDATE keyword_docs SET status='retired' WHERE memory_id=? AND cube_id=?",
                        (op.memory_id, op.cube_id),
                    )
                case DropCube():
                    conn.execute(
                        "DELETE FROM keyword_fts WHERE rowid IN (SELECT doc_id FROM keyword_docs WHERE cube_id=?)",
                        (op.cube_id,),
                    )
                    conn.execute("DELETE FROM keyword_docs WHERE cube_id=?", (op.cube_id,))
                case UpsertRelation():
                    pass

    @staticmethod
    def _put(
        conn: sqlite3.Connection,
        memory_id: str,
        cube_id: str,
        memory_type: str,
        status: str,
        text: str,
        title: str,
    ) -> None:
        fields = (_cube_token(cube_id), fts_text(text), fts_text(title))
        cur = conn.execute(
            "INSERT INTO keyword_docs (memory_id, cube_id, memory_type, status) VALUES (?,?,?,?)"
            " ON CONFLICT (memory_id) DO NOTHING",
            (memory_id, cube_id, memory_type, status),
        )
        if cur.rowcount == 1:
            conn.execute(
                "INSERT INTO keyword_fts (rowid, cube, body, title) VALUES (?,?,?,?)",
                (cur.lastrowid, *fields),
            )
            return
        row = conn.execute("SELECT doc_id FROM keyword_docs WHERE memory_id=?", (memory_id,)).fetchone()
        doc_id = row[0]
        conn.execute(
            "UPDATE keyword_docs SET cube_id=?, memory_type=?, status=? WHERE doc_id=?",
            (cube_id, memory_type, status, doc_id),
        )
        old = conn.execute("SELECT cube, body, title FROM keyword_fts WHERE rowid=?", (doc_id,)).fetchone()
        if old is None:
            conn.execute(
                "INSERT INTO keyword_fts (rowid, cube, body, title) VALUES (?,?,?,?)", (doc_id, *fields)
            )
        elif tuple(old) != fields:
            conn.execute("UPDATE keyword_fts SET cube=?, body=?, title=? WHERE rowid=?", (*fields, doc_id))

    # -- reads ---------------------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.db.read() as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    def _search_sync(
        self, sql: str, args: Sequence[Any], cube_id: str, types: str | None, include_retired: bool
    ) -> list[tuple[Any, ...]]:
        with self.db.read() as conn:
            if types is not None:  # most cubes hold no memories of most types: skip the BM25 scan then
                probe = (
                    "SELECT 1 FROM keyword_docs WHERE cube_id = ?"
                    " AND memory_type IN (SELECT value FROM json_each(?))"
                )
                if not include_retired:
                    probe += " AND status = 'activated'"
                if conn.execute(probe + " LIMIT 1", (cube_id, types)).fetchone() is None:
                    return []
            return conn.execute(sql, tuple(args)).fetchall()

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
        terms = fts_query(query)
        if not terms or k <= 0:
            return []
        expression = f'cube : "{_cube_token(cube_id)}" AND {{body title}} : ({terms})'
        sql = (
            f"SELECT d.memory_id, -bm25(keyword_fts, {_WEIGHTS}) AS score FROM keyword_fts"
            " JOIN keyword_docs d ON d.doc_id = keyword_fts.rowid"
            " WHERE keyword_fts MATCH ? AND d.cube_id = ?"
        )
        args: list[Any] = [expression, cube_id]
        if not include_retired:
            sql += " AND d.status = 'activated'"
        types = None if memory_types is None else json.dumps(list(memory_types))
        if types is not None:
            sql += " AND d.memory_type IN (SELECT value FROM json_each(?))"
            args.append(types)
        sql += " ORDER BY score DESC, d.memory_id LIMIT ?"
        args.append(k)
        rows = await asyncio.to_thread(self._search_sync, sql, args, cube_id, types, include_retired)
        return [
            ScoredMemory(memory_id=r[0], cube_id=cube_id, score=float(r[1]), retriever="keyword")
            for r in rows
        ]
