"""Documents of a cube changed since its tantivy index was last committed: kept in SQLite, searched from there.

A tantivy commit writes a segment of new files (about 15 ms of CPU here, whatever it holds), so committing
each cube on every projector batch made the keyword index almost all of a live add's projection cost. Live
batches instead note which documents changed (``kwt_pending_<slot>``: the document number and the text
tantivy holds for it, if any) and write the cube's index only once ``flush_docs`` are pending; a search
counts the pending documents exactly (term document frequencies corrected by what tantivy holds for them,
their current text scored from SQLite), so its results are those of a fully committed index.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import tantivy

from memory_store.embedded.keyword_tantivy_parts import (
    TANTIVY_SCHEMA,
    CubeIndex,
    Doc,
    bm25_score,
    idf,
    live_count,
)

__all__ = ["Pending", "create_pending", "flush_pending", "note_pending", "pending_count", "pending_table", "rank",
           "read_pending", "tantivy_document"]


def pending_table(slot: str) -> str:
    """The quoted name of a cube's pending-document table."""
    return f'"kwt_pending_{slot}"'


def create_pending(conn: sqlite3.Connection, slot: str) -> None:
    """Make a cube's pending table (committed: the text tantivy holds for the document, NULL for none)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {pending_table(slot)} (doc_no INTEGER PRIMARY KEY, committed TEXT)")


def note_pending(conn: sqlite3.Connection, slot: str, changes: Sequence[tuple[int, Doc | None, Doc | None]]) -> None:
    """Note changed documents; a document already pending keeps the text noted first (what tantivy holds)."""
    conn.executemany(
        f"INSERT OR IGNORE INTO {pending_table(slot)} (doc_no, committed) VALUES (?, ?)",
        [(doc_no, old.text if old is not None and old.body is not None else None) for doc_no, old, _ in changes],
    )


def pending_count(conn: sqlite3.Connection, slot: str) -> int:
    """How many documents of the cube are pending (0 when it has no pending table)."""
    try:
        return int(conn.execute(f"SELECT count(*) FROM {pending_table(slot)}").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise


def flush_pending(conn: sqlite3.Connection, slot: str, writer: tantivy.IndexWriter) -> int:
    """Write every pending document's current state into ``writer`` (delete, then add it if it has text) and
    forget them in SQLite; the caller commits the writer before the SQLite transaction. Returns how many."""
    rows = conn.execute(
        f"SELECT p.doc_no, d.memory_type, d.status, d.body, d.title, d.length FROM {pending_table(slot)} p"
        f' LEFT JOIN "kwt_docs_{slot}" d ON d.doc_no = p.doc_no ORDER BY p.doc_no'
    ).fetchall()
    for doc_no, memory_type, status, body, title, _length in rows:
        writer.delete_documents_by_term("key", str(doc_no))  # absolute: whatever tantivy held goes
        if body is not None:
            writer.add_document(tantivy_document(doc_no, Doc(memory_type, status, body, title, 0)))
    conn.execute(f"DELETE FROM {pending_table(slot)}")
    return len(rows)


def tantivy_document(doc_no: int, doc: Doc) -> tantivy.Document:
    """The tantivy document of a cube's document."""
    out = tantivy.Document()
    out.add_unsigned("doc_no", doc_no)
    out.add_text("key", str(doc_no))
    out.add_text("type", doc.memory_type)
    out.add_text("status", doc.status)
    out.add_text("text", doc.text)
    return out


@dataclass(slots=True)
class Pending:
    """A cube's pending documents as a search sees them."""

    committed: Counter[str] = field(default_factory=Counter)
    """Document frequency of each term in the text tantivy holds for the pending documents."""
    current: dict[int, tuple[str, str, str, int, Counter[str]]] = field(default_factory=dict)
    """doc_no -> (memory_id, memory_type, status, length, term counts) of each pending document with text."""
    current_df: Counter[str] = field(default_factory=Counter)
    """Document frequency of each term in the pending documents' current text."""
    current_types: set[str] = field(default_factory=set)
    """The memory types of the pending documents' current versions."""

    def __bool__(self) -> bool:
        return bool(self.committed or self.current)

    def df_correction(self, term: str) -> int:
        """What to add to tantivy's document frequency of ``term`` for the pending documents' current text."""
        return self.current_df[term] - self.committed[term]

    def matches(self, terms: Sequence[str], types: Sequence[str] | None, include_retired: bool) -> list[int]:
        """Pending documents holding one of ``terms`` that the search's filters keep."""
        return [
            doc_no for doc_no, (_, memory_type, status, _, words) in self.current.items()
            if (include_retired or status != "retired") and (types is None or memory_type in types)
            and any(t in words for t in terms)
        ]  # fmt: skip


def read_pending(conn: sqlite3.Connection, slot: str) -> tuple[Pending, frozenset[int]]:
    """The cube's pending documents, and the numbers of all of them (tantivy's version of those is stale)."""
    try:
        rows = conn.execute(
            f"SELECT p.doc_no, p.committed, d.memory_id, d.memory_type, d.status, d.body, d.title, d.length"
            f' FROM {pending_table(slot)} p LEFT JOIN "kwt_docs_{slot}" d ON d.doc_no = p.doc_no'
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return Pending(), frozenset()
        raise
    pending = Pending()
    for doc_no, committed, memory_id, memory_type, status, body, title, length in rows:
        if committed is not None:
            pending.committed.update(set(committed.split()))
        if body is not None:
            counts = Counter(f"{body} {title or ''}".split())
            pending.current[doc_no] = (memory_id, memory_type, status, length, counts)
            pending.current_df.update(counts.keys())
            pending.current_types.add(memory_type)
    return pending, frozenset(r[0] for r in rows)


Rows = Callable[[list[int]], "list[tuple[int, str, str | None, str | None, int]] | None"]
"""(doc_no, memory_id, body, title, length) of a cube's documents by number; None when the cube is gone."""
_SLACK = 1e-3  # tantivy scores in float32: a generous relative margin for the exactness bound


def rank(searcher: tantivy.Searcher, cube: CubeIndex, pending: Pending, stale: frozenset[int], terms: list[str],
         docs: int, tokens: int, k: int, types: list[str] | None, include_retired: bool, rows_of: Rows
         ) -> list[tuple[float, str]]:
    """The exact top ``k`` (score, memory id) of BM25 over a cube's current documents: tantivy proposes
    candidates from what it holds (terms boosted to the exact IDF; none of the pending documents, whose
    version there is stale), the pending documents are candidates from SQLite, and every candidate is scored
    from SQLite with the cube's own statistics; more are fetched until none left out can beat the k-th."""
    field = "text"
    if types is not None and pending.current_types.isdisjoint(types) and not cube.holds_types(searcher, types):
        return []  # no document of these types at all (tantivy's stale versions counted too): nothing to rank
    df = {t: live_count(searcher, tantivy.Query.term_query(TANTIVY_SCHEMA, field, t)) for t in terms}
    if pending:  # tantivy's counts with the pending documents' current text instead of what it holds
        df = {t: n + pending.df_correction(t) for t, n in df.items()}
    terms = [t for t in terms if df[t] > 0]
    if not terms:
        return []
    avg_length = max(tokens, 1) / docs
    weight = {t: idf(docs, min(df[t], docs)) for t in terms}
    stats = cube.tantivy_stats(searcher, terms[0])
    if stats:
        bound = max(1.0, avg_length / stats["avgdl"]) * (1.0 + _SLACK)
        boosts = {t: weight[t] / idf(int(stats["N"]), searcher.doc_freq(field, t)) for t in terms}
    else:  # no explanation: fetch every match
        bound, boosts = math.inf, dict.fromkeys(terms, 1.0)
    query = tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.boost_query(tantivy.Query.term_query(TANTIVY_SCHEMA, field, t),
                                                          boosts[t])) for t in terms]
    )  # fmt: skip
    clauses = [(tantivy.Occur.Must, query)]
    if not include_retired:
        clauses.append(
            (tantivy.Occur.MustNot, tantivy.Query.term_query(TANTIVY_SCHEMA, "status", "retired"))
        )
    if types is not None:
        kinds = tantivy.Query.term_set_query(TANTIVY_SCHEMA, "type", types)
        clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(kinds, 0.0)))
    if len(clauses) > 1:
        query = tantivy.Query.boolean_query(clauses)
    total = searcher.num_docs
    limit = min(total, k + max(10, k // 2))
    scored: dict[int, tuple[float, str]] = {}
    for doc_no in pending.matches(terms, types, include_retired):  # scored like every hit, from their counts
        memory_id, _, _, length, counts = pending.current[doc_no]
        scored[doc_no] = (bm25_score(counts.__getitem__, length, terms, weight, avg_length), memory_id)
    while True:
        hits = searcher.search(query, limit, count=False).hits if limit > 0 else []
        numbers = searcher.fast_field_values("doc_no", [address for _, address in hits])
        todo = [int(n) for n in numbers if n is not None and n not in scored and n not in stale]
        rows = rows_of(todo)
        if rows is None:  # the cube was dropped since
            return []
        for doc_no, memory_id, text, title, length in rows:
            words = f"{text or ''} {title or ''}".split()
            scored[doc_no] = (bm25_score(words.count, length, terms, weight, avg_length), memory_id)
        ranked = sorted(scored.values(), key=lambda hit: (-hit[0], hit[1]))
        if len(hits) < limit or limit >= total:
            return ranked[:k]
        if len(ranked) >= k and ranked[k - 1][0] > bound * hits[-1][0]:
            return ranked[:k]  # nothing left out can reach the k-th score
        limit = min(total, limit * 4)

