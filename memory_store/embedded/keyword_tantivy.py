"""TantivyKeywordIndex: BM25 over memory text with one tantivy index per cube, exact per-cube statistics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import tantivy

from memory_store.base import Ask, KeywordIndex, Lending
from memory_store.embedded.db import EmbeddedProjection, Synchronous, runs_by_kind
from memory_store.embedded.keyword_pending import (
    create_pending,
    flush_pending,
    note_pending,
    pending_count,
    pending_table,
    rank,
    read_pending,
    tantivy_document,
)
from memory_store.embedded.keyword_tantivy_parts import (
    LENT_READS,
    CubeIndex,
    Doc,
    analyze,
    cube_slot,
    doc_length,
    doc_rows,
    known_docs,
    tantivy_paths,
    top_doc,
    update_docs,
)
from schemas.envelope import Position
from schemas.errors import StoreError, StoreUnavailable
from schemas.memory import ScoredMemory
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory
from schemas.text import index_text, query_tokens

__all__ = ["TantivyKeywordIndex"]

_MAX_TERMS = 64
_MAX_WRITERS = 8  # cube writers kept between batches at most

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kwt_cubes (cube_id TEXT PRIMARY KEY, slot TEXT NOT NULL UNIQUE,
    docs INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS kwt_revs (slot TEXT PRIMARY KEY, rev INTEGER NOT NULL);
"""
"""Cubes with their BM25 statistics: documents with text (retired included) and their total length; and
per cube slot a count of the batches that changed its documents (kept across drops, so never reused), under
which searches keep the cube's pending documents read."""

_BUMP = "INSERT INTO kwt_revs (slot, rev) VALUES (?, 1) ON CONFLICT (slot) DO UPDATE SET rev=rev+1"

_CUBE_SCHEMA = """
CREATE TABLE IF NOT EXISTS "kwt_docs_{slot}" (doc_no INTEGER PRIMARY KEY, memory_id TEXT NOT NULL UNIQUE,
    memory_type TEXT NOT NULL, status TEXT NOT NULL, body TEXT, title TEXT, length INTEGER NOT NULL DEFAULT 0)
"""
"""A cube's documents: ``body`` and ``title`` hold the analysed terms, space-separated; NULL marks a
tombstone (a retirement that arrived before its memory)."""


class TantivyKeywordIndex(EmbeddedProjection, KeywordIndex):
    """KeywordIndex over tantivy (block-max WAND top-k), one index folder per cube, exact BM25 per cube.

    ``tantivy:///abs/keyword.db`` (or ``sqlite:///abs/store.db``) keeps checkpoints, cube statistics and
    each cube's documents (terms, type, status; tombstones) in that SQLite file, and the indexes in
    ``<path>.tantivy/<slot>/``. Live batches note the documents they change as pending in SQLite
    (``keyword_pending``: searched from there, exactly) and write a cube's index once ``flush_docs`` of its
    documents are pending; replays write every batch. A batch writes the tantivy indexes first and commits
    them before the SQLite transaction (data + checkpoint) commits; writes are absolute (delete the document,
    add it again) and computed from the SQLite state, so a batch re-applied after a crash between the two
    ends in the same state. A cube's writer is kept between batches (at most ``_MAX_WRITERS``) and let go after
    ``writer_idle_s`` without writes, so another process (a CLI command beside the server) can write
    next; while one holds it, a batch waits up to ``busy_timeout_s`` and then fails retryably.

    Scores are BM25 (k1 1.2, b 0.75; higher is better) over the cube's own live documents, retired
    included: tantivy's statistics also count deleted documents until its segments merge, so tantivy only
    proposes candidates (its terms boosted to the exact IDF) and the candidates are scored again from
    the exact statistics; more are fetched until no document left out can beat the k-th (tantivy's
    length normalisation can only be off by the ratio of the two average lengths). Scores therefore
    depend on the cube's current memories alone, not on its history nor on other cubes.
    """

    name = "keyword"

    def __init__(self, url: str | Path, *, synchronous: Synchronous = "FULL", busy_timeout_s: float = 30.0,
                 namespace: str = "", writer_idle_s: float = 0.5, flush_docs: int = 128) -> None:
        sqlite_url, self._folder = tantivy_paths(url)
        super().__init__(sqlite_url, synchronous=synchronous, busy_timeout_s=busy_timeout_s, namespace=namespace)
        self.url = str(url)
        self._cubes: dict[str, CubeIndex] = {}
        self._cubes_lock = threading.Lock()
        self._touched: dict[str, CubeIndex] = {}
        self._deltas: dict[str, list[int]] = {}
        self._slots: dict[str, str] = {}
        """Slot of each cube seen in the current batch."""
        self._busy_timeout_s = busy_timeout_s
        self._flush_docs = flush_docs
        """Documents a cube's live batches leave pending (``keyword_pending``) before its index is written
        and committed (1: every batch, as replays do)."""
        self._defer = False
        """Whether this batch leaves its documents pending (live batches) or writes them (replays)."""
        self._noted: set[str] = set()
        """Slots of this batch with changes (their revision moves on; a pending table is made for them)."""
        self._direct: set[str] = set()
        """Slots this batch writes to tantivy (their earlier pending documents flushed first)."""
        self._visible = threading.Lock()
        """Held from a batch's first tantivy commit until its SQLite transaction is over, and by a search while it
        takes a cube's searcher and pending documents: a search sees both or neither (in this process)."""
        self._visible_held = False
        self._writer_idle_s = writer_idle_s
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def _schema(self) -> str:
        return _SCHEMA

    def _on_open(self) -> None:
        self._stop.clear()
        self._reaper = threading.Thread(target=self._reap, name="keyword-writers", daemon=True)
        self._reaper.start()

    async def aclose(self) -> None:
        """Let every writer go (its merges finished), then close the database. Idempotent."""
        self._stop.set()
        if self._reaper is not None:
            await asyncio.to_thread(self._reaper.join)
            self._reaper = None
        await asyncio.to_thread(self.release_writers, 0.0)
        await super().aclose()

    def _reap(self) -> None:
        while not self._stop.wait(self._writer_idle_s / 2):
            self.release_writers(self._writer_idle_s)

    def release_writers(self, idle_s: float = 0.0) -> int:
        """Let go of the cube writers unused for ``idle_s`` seconds, so that another process may write
        those cubes; returns how many. A writer is kept between batches (taking one and letting it go
        costs more than a small batch) and let go by a background thread after ``writer_idle_s``."""
        now = time.monotonic()
        with self.db.lock:  # no batch in progress
            with self._cubes_lock:
                idle = [
                    c.take_writer()
                    for c in self._cubes.values()
                    if c.writer is not None and now - c.used >= idle_s
                ]
        for writer in idle:  # every batch committed or rolled back: nothing to drop, merges run to the end
            CubeIndex.release(writer, rollback=False)
        return len(idle)

    def lending(self) -> Lending | None:
        """This index opened again, with the same options, in another process; None when it lives in memory."""
        if self._folder is None or self.db.path == ":memory:":
            return None
        opener = functools.partial(
            TantivyKeywordIndex, self.url, synchronous=self.db.synchronous, busy_timeout_s=self._busy_timeout_s,
            namespace=self.namespace, writer_idle_s=self._writer_idle_s, flush_docs=self._flush_docs,
        )
        return Lending(opener, LENT_READS)

    async def lend(self) -> None:
        """Let every writer go, so that another process can take the cubes' index locks."""
        await asyncio.to_thread(self.release_writers, 0.0)

    async def take_back(self, cube_id: str) -> None:
        """Forget this process's handle on the cube's index (another process dropped and rebuilt its folder)."""
        with self._cubes_lock:
            cube = self._cubes.pop(cube_slot(cube_id), None)
        if cube is not None:
            CubeIndex.release(cube.take_writer(), rollback=True)

    # -- per-cube indexes ------------------------------------------------------------------------------

    def _cube(self, slot: str) -> CubeIndex:
        with self._cubes_lock:
            cube = self._cubes.get(slot)
            if cube is not None and cube.folder is not None and not cube.folder.is_dir():
                stale, cube = cube.take_writer(), None  # another process dropped the cube since
                if stale is not None:
                    with contextlib.suppress(ValueError):
                        CubeIndex.release(stale, rollback=True)
            if cube is None:
                cube = CubeIndex(slot, None if self._folder is None else self._folder / slot)
                self._cubes[slot] = cube
            return cube

    def _forget(self, slot: str) -> None:
        with self._cubes_lock:
            cube = self._cubes.pop(slot, None)
        if cube is not None:
            CubeIndex.release(cube.take_writer(), rollback=True)
        if self._folder is not None:
            with self._cubes_lock:  # no search re-opens the folder while it goes (it held only lock files after)
                again = self._cubes.pop(slot, None)  # a search opened it meanwhile: that goes with the folder
                shutil.rmtree(self._folder / slot, ignore_errors=True)
            if again is not None:
                CubeIndex.release(again.take_writer(), rollback=True)

    # -- writes (inside the SQLite batch transaction) ---------------------------------------------------

    def _apply_locked(self, batch: Sequence[tuple[Sequence[AnyOp], Position]], replay: bool) -> list[bool]:
        self._defer = not replay and self._flush_docs > 1
        return super()._apply_locked(batch, replay)

    def _begin_batch(self) -> None:
        self._touched, self._deltas, self._slots, self._noted, self._direct = {}, {}, {}, set(), set()

    def _abort_batch(self) -> None:
        for cube in self._touched.values():
            CubeIndex.release(cube.take_writer(), rollback=True)
        self._begin_batch()
        self._release_visible()

    def _commit_batch(self) -> None:
        for cube in self._touched.values():
            cube.refresh(force=True)
        self._begin_batch()
        self._release_visible()

    def _release_visible(self) -> None:
        if self._visible_held:
            self._visible_held = False
            self._visible.release()

    def _slot_of(self, conn: sqlite3.Connection, cube_id: str, *, create: bool) -> str | None:
        slot = self._slots.get(cube_id)  # known in this batch (a drop forgets it)
        if slot is not None:
            return slot
        row = conn.execute("SELECT slot FROM kwt_cubes WHERE cube_id=?", (cube_id,)).fetchone()
        if row is not None:
            slot = self._slots[cube_id] = str(row[0])
            return slot
        if not create:
            return None
        slot = cube_slot(cube_id)
        owner = conn.execute("SELECT cube_id FROM kwt_cubes WHERE slot=?", (slot,)).fetchone()
        if owner is not None:
            raise StoreError(f"cubes {owner[0]!r} and {cube_id!r} hash to the same keyword index {slot}")
        conn.execute("INSERT INTO kwt_cubes (cube_id, slot) VALUES (?,?)", (cube_id, slot))
        conn.execute(_CUBE_SCHEMA.format(slot=slot))
        self._slots[cube_id] = slot
        return slot

    def _writer(self, slot: str) -> tantivy.IndexWriter:
        cube = self._touched.get(slot)
        if cube is None:
            cube = self._touched[slot] = self._cube(slot)
        return cube.open_writer(self._busy_timeout_s)

    def _write_many(self, conn: sqlite3.Connection, slot: str,
                    changes: Sequence[tuple[int, Doc | None, Doc | None]]) -> None:
        """For each (doc_no, old, new) in order, replace document ``doc_no`` of the cube's index by ``new``
        or delete it (``new`` None or a tombstone), or note it pending (live batches); keep the statistics."""
        if not changes:
            return
        delta = self._deltas.setdefault(slot, [0, 0])
        docs, tokens = delta
        for _, old, new in changes:
            if old is not None and old.body is not None:
                docs -= 1
                tokens -= old.length
            if new is not None and new.body is not None:
                docs += 1
                tokens += new.length
        delta[:] = docs, tokens
        first = slot not in self._noted
        self._noted.add(slot)
        if self._defer and slot not in self._direct and len(changes) < self._flush_docs:
            if first:
                create_pending(conn, slot)
            note_pending(conn, slot, changes)
            return
        writer = self._writer(slot)  # a replay, or a live run of flush_docs or more (written, not noted)
        if slot not in self._direct:
            self._direct.add(slot)
            if pending_count(conn, slot):  # what was left pending (also earlier in this batch) goes first
                flush_pending(conn, slot, writer)
        delete, add = writer.delete_documents_by_term, writer.add_document
        for doc_no, old, new in changes:
            if old is not None and old.body is not None:
                delete("key", str(doc_no))
            if new is not None and new.body is not None:
                add(tantivy_document(doc_no, new))

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        by_cube: dict[str, list[AnyOp]] = {}  # cubes are independent: each cube's ops, in order
        for op in ops:
            if isinstance(op, UpsertMemory):
                by_cube.setdefault(op.memory.cube_id, []).append(op)
            elif isinstance(op, ReviseMemory | RetireMemory | DropCube):
                by_cube.setdefault(op.cube_id, []).append(op)
        for cube_ops in by_cube.values():
            self._apply_cube(conn, cube_ops)
        for slot, (docs, tokens) in self._deltas.items():  # the cube's BM25 statistics
            if docs or tokens:
                conn.execute(
                    "UPDATE kwt_cubes SET docs=docs+?, tokens=tokens+? WHERE slot=?", (docs, tokens, slot)
                )
        if self._defer:  # a cube with enough pending documents has them written, committed below
            for slot in self._noted - self._direct:
                if pending_count(conn, slot) >= self._flush_docs:
                    flush_pending(conn, slot, self._writer(slot))
        conn.executemany(_BUMP, [(slot,) for slot in self._noted])
        if self._touched and not self._visible_held:  # searches see both commits or neither (released
            self._visible.acquire()  # once the SQLite transaction is over: _commit_batch, _abort_batch)
            self._visible_held = True
        try:
            for cube in self._touched.values():
                if cube.writer is not None:
                    cube.writer.commit()
        except ValueError as exc:
            raise StoreUnavailable(f"keyword index commit failed: {exc}") from exc
        with self._cubes_lock:
            held = sorted((c for c in self._cubes.values() if c.writer is not None), key=lambda c: c.used)
            spare = [c.take_writer() for c in held[: max(0, len(held) - _MAX_WRITERS)]]
        for writer in spare:  # committed: let the least recently used go (a thread and arena each)
            CubeIndex.release(writer, rollback=False)

    def _apply_cube(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        """One cube's ops in order, as runs of one kind (a replay's batch is a handful of runs)."""
        for run in runs_by_kind(ops):
            kind = type(run[0])
            if kind is UpsertMemory:
                self._upsert_run(conn, run)  # type: ignore[arg-type]
            elif kind is ReviseMemory:
                self._revise_run(conn, [op for op in run if isinstance(op, ReviseMemory) and op.memory])
            elif kind is RetireMemory:
                self._retire_run(conn, run)  # type: ignore[arg-type]
            else:
                for op in run:
                    if isinstance(op, DropCube):
                        self._drop(conn, op.cube_id)

    def _upsert_run(self, conn: sqlite3.Connection, run: Sequence[UpsertMemory]) -> None:
        """Upserts of one cube: known documents read in one query, new ones inserted in one call."""
        slot = self._slot_of(conn, run[0].memory.cube_id, create=True)
        assert slot is not None
        table = f'"kwt_docs_{slot}"'
        latest = {op.memory.id: op.memory for op in run}  # a later upsert of the same id wins
        known = known_docs(conn, slot, list(latest))
        fresh = [m for i, m in latest.items() if i not in known]
        changes: list[tuple[int, Doc | None, Doc | None]] = []
        if fresh:
            top = top_doc(conn, slot)
            rows = []
            for n, m in enumerate(fresh, start=top + 1):
                doc = Doc.of(m.memory_type, m.status, m.memory, m.key)
                rows.append((n, m.id, *doc))
                changes.append((n, None, doc))
            conn.executemany(
                f"INSERT INTO {table} (doc_no, memory_id, memory_type, status, body, title, length)"
                " VALUES (?,?,?,?,?,?,?)",
                rows,
            )
        updates = []
        for memory_id, (doc_no, old) in known.items():
            m = latest[memory_id]
            new = Doc.of(m.memory_type, "retired" if old.status == "retired" else m.status, m.memory, m.key)
            if new == old:
                continue
            updates.append((*new, doc_no))
            changes.append((doc_no, old, new))
        update_docs(conn, slot, updates)
        self._write_many(conn, slot, changes)

    def _revise_run(self, conn: sqlite3.Connection, run: Sequence[ReviseMemory]) -> None:
        """Revisions of one cube in order: the documents they touch read in one query, written in one call.
        A revision of a memory the cube does not hold, or of a tombstone, changes nothing."""
        slot = None if not run else self._slot_of(conn, run[0].cube_id, create=False)
        if slot is None:
            return
        docs = known_docs(conn, slot, list(dict.fromkeys(op.memory_id for op in run)))
        updates, changes = [], []
        for op in run:
            known = docs.get(op.memory_id)
            if known is None or known[1].body is None:
                continue
            doc_no, old = known
            body = " ".join(analyze(index_text(op.memory)))
            if body == old.body:
                continue
            new = old._replace(body=body, length=doc_length(body, old.title))
            docs[op.memory_id] = (doc_no, new)
            updates.append((*new, doc_no))
            changes.append((doc_no, old, new))
        update_docs(conn, slot, updates)
        self._write_many(conn, slot, changes)

    def _retire_run(self, conn: sqlite3.Connection, run: Sequence[RetireMemory]) -> None:
        """Retirements of one cube in order; one of a memory not (yet) held leaves a tombstone."""
        slot = self._slot_of(conn, run[0].cube_id, create=True)
        assert slot is not None
        docs = known_docs(conn, slot, list(dict.fromkeys(op.memory_id for op in run)))
        top: int | None = None
        tombstones, updates, changes = [], [], []
        for op in run:
            known = docs.get(op.memory_id)
            if known is None:
                top = (top_doc(conn, slot) if top is None else top) + 1
                docs[op.memory_id] = (top, Doc("", "retired", None, None, 0))
                tombstones.append((top, op.memory_id))
                continue
            doc_no, old = known
            if old.status == "retired":
                continue
            new = old._replace(status="retired")
            docs[op.memory_id] = (doc_no, new)
            updates.append((*new, doc_no))
            changes.append((doc_no, old, new))
        if tombstones:
            conn.executemany(
                f'INSERT INTO "kwt_docs_{slot}" (doc_no, memory_id, memory_type, status, body, title, length)'
                " VALUES (?, ?, '', 'retired', NULL, NULL, 0)",
                tombstones,
            )
        update_docs(conn, slot, updates)
        self._write_many(conn, slot, changes)

    def _drop(self, conn: sqlite3.Connection, cube_id: str) -> None:
        slot = self._slot_of(conn, cube_id, create=False)
        if slot is None:
            return
        conn.execute(f'DROP TABLE IF EXISTS "kwt_docs_{slot}"')
        conn.execute(f"DROP TABLE IF EXISTS {pending_table(slot)}")
        self._noted.discard(slot)  # a new table if the cube comes back in this batch; its revision moves on now
        self._direct.discard(slot)
        conn.execute(_BUMP, (slot,))
        conn.execute("DELETE FROM kwt_cubes WHERE slot=?", (slot,))
        self._touched.pop(slot, None)
        self._deltas.pop(slot, None)
        self._slots.pop(cube_id, None)
        self._forget(slot)  # its folder goes now: a crash before the commit re-applies the drop

    # -- reads ---------------------------------------------------------------------------------------

    def _search_sync(
        self, cube_id: str, terms: list[str], asks: list[Ask], include_retired: bool
    ) -> list[list[tuple[float, str]]]:
        with self.db.read() as conn:
            conn.execute("BEGIN")  # one snapshot: statistics, pending documents and the rows scored agree
            try:
                with self._visible:  # and the index as committed with them
                    row = conn.execute(
                        "SELECT c.slot, c.docs, c.tokens, coalesce(r.rev, 0) FROM kwt_cubes c"
                        " LEFT JOIN kwt_revs r ON r.slot = c.slot WHERE c.cube_id=?", (cube_id,)
                    ).fetchone()
                    if row is None or row[1] <= 0:
                        return [[] for _ in asks]
                    slot, docs, tokens, rev = str(row[0]), int(row[1]), int(row[2]), int(row[3])
                    cube = self._cube(slot)
                    cube.refresh()
                    searcher = cube.index.searcher()
                    if cube.pending is None or cube.pending[0] != rev:  # read once per batch that changed it
                        cube.pending = (rev, *read_pending(conn, slot))
                    _, pending, stale = cube.pending
                return [rank(searcher, cube, pending, stale, terms, docs, tokens, min(k, 2**31 - 1),
                             None if types is None else list(types), include_retired,
                             lambda todo: doc_rows(conn, slot, todo))
                        if k > 0 and (types is None or types) else [] for k, types in asks]  # fmt: skip
            finally:
                conn.execute("ROLLBACK")  # read only

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
        return (await self.search_each(cube_id, query, [Ask(k, memory_types)], include_retired=include_retired))[0]

    async def search_each(
        self, cube_id: str, query: str, asks: Sequence[Ask], *, include_retired: bool = False
    ) -> list[list[ScoredMemory]]:
        """``search`` for each ask, answered together: one thread hop, one snapshot."""
        terms = list(dict.fromkeys(analyze(" ".join(query_tokens(query, limit=_MAX_TERMS)))))
        if not terms or not any(k > 0 and (types is None or types) for k, types in asks):
            return [[] for _ in asks]
        found = await asyncio.to_thread(self._search_sync, cube_id, terms, list(asks), include_retired)
        return [[ScoredMemory(memory_id=i, cube_id=cube_id, score=s, retriever="keyword") for s, i in hits]
                for hits in found]  # fmt: skip

