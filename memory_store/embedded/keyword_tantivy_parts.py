"""Building blocks of the tantivy keyword index: analyser, schema, exact BM25, document rows, per-cube index handle."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import tantivy

from schemas.errors import ConfigError, StoreUnavailable
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory
from schemas.text import index_text

__all__ = [
    "ANALYZER",
    "LENT_READS",
    "MAX_TOKEN",
    "WRITER_HEAP",
    "B",
    "K1",
    "TANTIVY_SCHEMA",
    "CubeIndex",
    "Doc",
    "analyze",
    "bm25",
    "cube_slot",
    "doc_length",
    "doc_rows",
    "idf",
    "known_docs",
    "tantivy_paths",
    "tantivy_stats",
    "top_doc",
    "update_docs",
]

logger = logging.getLogger(__name__)

LENT_READS: dict[type[AnyOp], tuple[str, ...]] = {
    UpsertMemory: ("id", "cube_id", "memory_type", "status", "memory", "key"),
    ReviseMemory: ("memory_id", "cube_id", "memory"), RetireMemory: ("memory_id", "cube_id"), DropCube: ("cube_id",)}
"""What a replay in another process sends of each op the index applies (``TantivyKeywordIndex.lending``)."""

K1, B = 1.2, 0.75
"""BM25 parameters (tantivy's and Lucene's defaults)."""

WRITER_HEAP = 24_000_000
"""Indexing memory of a cube's writer (bytes; tantivy's minimum is 15 MB)."""
MAX_TOKEN = 200  # longer tokens are dropped (tantivy's terms are bounded; no real word is this long)

ANALYZER = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace())
    .filter(tantivy.Filter.remove_long(MAX_TOKEN))
    .filter(tantivy.Filter.stemmer("english"))
    .build()
)


def analyze(text: str) -> list[str]:
    """Terms of already tokenised text (``schemas.text``): English words stemmed, CJK bigrams kept."""
    return list(ANALYZER.analyze(text)) if text else []


def bm25(tf: int, length: int, idf: float, avg_length: float) -> float:
    """One term's BM25 contribution (k1 = 1.2, b = 0.75): ``idf * (k1 + 1) * tf / (tf + k1 * norm)``."""
    return idf * (K1 + 1.0) * tf / (tf + K1 * (1.0 - B + B * length / avg_length))


def bm25_score(tf_of: Callable[[str], int], length: int, terms: Sequence[str], weight: dict[str, float],
               avg_length: float) -> float:
    """A document's BM25 score from its term frequencies (``tf_of``), summed in query order: documents alike in
    what counts tie exactly, however their frequencies were counted."""
    score = 0.0
    for t in terms:
        tf = tf_of(t)
        if tf:
            score += bm25(tf, length, weight[t], avg_length)
    return score


def live_count(searcher: tantivy.Searcher, query: tantivy.Query) -> int:
    """Live (not deleted) documents matching ``query``."""
    count: int | None = searcher.search(query, 1, count=True).count  # type: ignore[attr-defined]
    return count or 0


def idf(docs: int, df: int) -> float:
    """BM25 inverse document frequency (as tantivy and Lucene compute it)."""
    return math.log(1.0 + (docs - df + 0.5) / (df + 0.5))


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("doc_no", fast=True)
    builder.add_text_field("key", tokenizer_name="raw", index_option="basic")  # str(doc_no), to delete by
    builder.add_text_field("type", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("status", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("text", tokenizer_name="whitespace", index_option="freq")
    return builder.build()


TANTIVY_SCHEMA = _schema()


@functools.lru_cache(maxsize=4096)
def cube_slot(cube_id: str) -> str:
    """Folder and table suffix of a cube: 16 hex digits of its hash (the id itself may hold anything)."""
    return hashlib.blake2b(cube_id.encode(), digest_size=8).hexdigest()


def tantivy_paths(url: str | Path) -> tuple[str, Path | None]:
    """(SQLite URL of the side tables, folder of the per-cube indexes or None for in-memory)."""
    text = str(url)
    parts = urlsplit(text)
    if parts.scheme and parts.scheme not in ("tantivy", "sqlite", "embedded"):
        raise ConfigError(f"not a tantivy keyword URL: {text!r} (expected tantivy:///abs/keyword.db)")
    path = "/" + (parts.netloc + parts.path).lstrip("/") if parts.scheme else text
    if path in ("", "/"):
        raise ConfigError(f"keyword index URL has no path: {text!r}")
    if path == "/:memory:":
        return "sqlite:///:memory:", None
    return f"sqlite:///{path}", Path(f"{path}.tantivy")


_NUMBER = re.compile(r"^(?P<what>N|avgdl),")


def tantivy_stats(explanation: dict[str, Any]) -> dict[str, float]:
    """Tantivy's own document count and average length (deleted documents included) from an explanation."""
    found: dict[str, float] = {}
    stack = [explanation]
    while stack:
        node = stack.pop()
        match = _NUMBER.match(str(node.get("description", "")))
        if match:
            found[match["what"]] = float(node["value"])
        stack.extend(node.get("details", []))
    return found


def doc_length(body: str | None, title: str | None) -> int:
    """Terms in a document: its body and title terms."""
    return sum(len(part.split()) for part in (body, title) if part)


class Doc(NamedTuple):
    """A document's state as kept in SQLite (body None: a tombstone)."""

    memory_type: str
    status: str
    body: str | None
    title: str | None
    length: int

    @classmethod
    def of(cls, memory_type: str, status: str, memory: str, key: str) -> Doc:
        body_terms = analyze(index_text(memory)) if memory else []
        title_terms = analyze(index_text(key)) if key else []
        # Terms hold no whitespace (the analysed text is words joined by spaces), so ``doc_length`` of the
        # joined strings is the number of non-empty terms.
        length = len(body_terms) + len(title_terms) - body_terms.count("") - title_terms.count("")
        return cls(memory_type, status, " ".join(body_terms), " ".join(title_terms), length)

    @property
    def text(self) -> str:
        """What tantivy indexes: body and title terms as one field."""
        return f"{self.body or ''} {self.title or ''}"


def known_docs(conn: sqlite3.Connection, slot: str, memory_ids: Sequence[str]) -> dict[str, tuple[int, Doc]]:
    """(doc_no, document) of each of these memories a cube's document table holds, by memory id."""
    return {
        r[1]: (r[0], Doc(*r[2:]))
        for r in conn.execute(
            f'SELECT doc_no, memory_id, memory_type, status, body, title, length FROM "kwt_docs_{slot}"'
            " WHERE memory_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(memory_ids)),),
        )
    }


def top_doc(conn: sqlite3.Connection, slot: str) -> int:
    """The highest document number of a cube (0 for none)."""
    return int(conn.execute(f'SELECT coalesce(max(doc_no), 0) FROM "kwt_docs_{slot}"').fetchone()[0])


def update_docs(conn: sqlite3.Connection, slot: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Rewrite documents of a cube: rows of (memory_type, status, body, title, length, doc_no), in order."""
    if rows:
        conn.executemany(
            f'UPDATE "kwt_docs_{slot}" SET memory_type=?, status=?, body=?, title=?, length=? WHERE doc_no=?',
            rows,
        )


class CubeIndex:
    """One cube's tantivy index in this process: reader state and, during a batch, its writer."""

    def __init__(self, slot: str, folder: Path | None) -> None:
        self.slot = slot
        self.folder = folder
        if folder is None:
            self.index = tantivy.Index(TANTIVY_SCHEMA)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.index = tantivy.Index(TANTIVY_SCHEMA, path=str(folder), reuse=True)
        self.writer: tantivy.IndexWriter | None = None
        self.used = 0.0
        """When the writer was last used (monotonic seconds); idle writers are let go."""
        self.seen = self._meta_stamp()
        self.generation = 0
        self.stats: tuple[int, dict[str, float]] | None = None
        """Tantivy's (N, avgdl) for ``generation``, read from an explanation once per generation."""
        self.pending: tuple[int, Any, frozenset[int]] | None = None
        """The cube's pending documents as last read (``keyword_pending.read_pending``), under their revision."""
        self.kinds: tuple[int, dict[tuple[str, ...], bool]] = (0, {})
        """Whether tantivy holds a document of each type set asked about, for ``generation``."""

    def _meta_stamp(self) -> tuple[int, int, int]:
        """Identity of the index's meta.json: tantivy replaces it (a new inode) on every commit."""
        if self.folder is None:
            return (0, 0, 0)
        try:
            stat = os.stat(self.folder / "meta.json")
        except FileNotFoundError:
            return (-1, -1, -1)
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def refresh(self, force: bool = False) -> None:
        """Reload the searcher when a commit (of this or another process) happened since."""
        stamp = self._meta_stamp()
        if force or stamp != self.seen:
            self.index.reload()
            self.seen = stamp
            self.generation += 1

    def tantivy_stats(self, searcher: tantivy.Searcher, term: str) -> dict[str, float]:
        """Tantivy's N and average length (they count deleted documents), read once per searcher reload."""
        if self.stats is not None and self.stats[0] == self.generation:
            return self.stats[1]
        query = tantivy.Query.term_query(TANTIVY_SCHEMA, "text", term)
        hits = searcher.search(query, 1, count=False).hits
        stats = tantivy_stats(json.loads(query.explain(searcher, hits[0][1]).to_json())) if hits else {}
        if "N" in stats and "avgdl" in stats:
            self.stats = (self.generation, stats)
        return stats

    def holds_types(self, searcher: tantivy.Searcher, types: Sequence[str]) -> bool:
        """Whether tantivy holds any document of ``types`` (stale versions of pending ones too), counted once per
        searcher reload."""
        if self.kinds[0] != self.generation:
            self.kinds = (self.generation, {})
        key = tuple(types)
        held = self.kinds[1].get(key)
        if held is None:
            held = self.kinds[1][key] = live_count(searcher, tantivy.Query.term_set_query(TANTIVY_SCHEMA, "type",
                                                                                          list(types))) > 0
        return held

    def open_writer(self, timeout_s: float) -> tantivy.IndexWriter:
        """This cube's writer, taken now if not held: while another process holds it, wait up to
        ``timeout_s`` (as SQLite waits for its write lock), then raise StoreUnavailable (retryable)."""
        if self.writer is None:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    self.writer = self.index.writer(WRITER_HEAP, 1)
                    break
                except ValueError as exc:
                    if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                        raise StoreUnavailable(
                            f"keyword index of cube slot {self.slot} is busy: {exc}"
                        ) from exc
                    time.sleep(0.01)  # lock wait: another process's writer goes when idle
        self.used = time.monotonic()
        return self.writer

    def take_writer(self) -> tantivy.IndexWriter | None:
        """Detach the writer (the caller lets it go with ``release``)."""
        writer, self.writer = self.writer, None
        return writer

    @staticmethod
    def release(writer: tantivy.IndexWriter | None, *, rollback: bool) -> None:
        """Let a writer go once its merges finished, dropping what it did not commit when ``rollback``."""
        if writer is not None:
            if rollback:
                writer.rollback()
            writer.wait_merging_threads()


def doc_rows(conn: sqlite3.Connection, slot: str, doc_nos: list[int]
             ) -> list[tuple[int, str, str | None, str | None, int]] | None:
    """(doc_no, memory_id, body, title, length) of these documents of a cube; None if it was dropped since."""
    try:
        return conn.execute(
            f'SELECT doc_no, memory_id, body, title, length FROM "kwt_docs_{slot}"'
            " WHERE doc_no IN (SELECT value FROM json_each(?))",
            (json.dumps(doc_nos),),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
