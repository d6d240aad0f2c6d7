"""The embedded vector store across processes: every write batch journals the memories it changed, and a
process that did not write them re-reads those rows before it searches."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import numpy as np

from memory_store.embedded.vector_rows import Change, Drop, Put
from memory_store.embedded.vector_state import VectorState

__all__ = ["JOURNAL_SCHEMA", "VectorJournal"]

logger = logging.getLogger(__name__)

JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, memory_ids TEXT NOT NULL,
    dropped TEXT NOT NULL);
"""
"""One row per committed write batch: the ids of the memories it changed and the cubes it dropped (JSON)."""

_ROW = "memory_id, cube_id, memory_type, status, embedding"


def _latest(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='vector_journal'").fetchone()
    return int(row[0]) if row else 0


class VectorJournal(VectorState):
    """Mixin of EmbeddedVectorStore: cross-process freshness through the ``vector_journal`` table.

    A write batch adds one journal row inside its transaction (``_journal_write``). A process keeps the
    sequence number up to which its in-memory vectors agree with the database (``_seen_seq``): its own
    batches move it on when nothing else was written in between; ``_refresh`` (before every search) applies
    the batches of other processes (a server beside its derivation process, a CLI command beside a server)
    by re-reading the rows they name. Journal rows older than the last ``journal_keep`` batches are pruned;
    a process further behind reloads every vector.
    """

    journal_keep = 4_096
    """Batches the journal keeps (a batch names up to a few hundred ids: a few MB at most)."""
    journal_prune_every = 256
    """Batches between two prunings of the journal (each keeps the last ``journal_keep``)."""
    _staged: list[Change]

    def _load_all(self) -> None:
        raise NotImplementedError

    _seen_seq: int = 0
    _journal_mark: tuple[int, int] | None = None

    def _journal_start(self) -> None:
        """At open: the journal position the vectors about to be loaded are at least as new as."""
        with self.db.read() as conn:
            self._seen_seq = _latest(conn)

    def _journal_write(self, conn: sqlite3.Connection) -> None:
        """Inside the batch's write transaction: journal what the staged changes touch."""
        ids = sorted({c.memory_id for c in self._staged if not isinstance(c, Drop)})
        dropped = sorted({c.cube_id for c in self._staged if isinstance(c, Drop)})
        if not ids and not dropped:
            self._journal_mark = None
            return
        before = _latest(conn)
        after = conn.execute("INSERT INTO vector_journal (memory_ids, dropped) VALUES (?, ?)",
                             (json.dumps(ids), json.dumps(dropped))).lastrowid  # fmt: skip
        assert after is not None
        if after % self.journal_prune_every == 0:
            conn.execute("DELETE FROM vector_journal WHERE seq <= ?", (after - self.journal_keep,))
        self._journal_mark = (before, after)

    def _journal_committed(self) -> None:
        """After the batch committed (state lock held): the batch is this process's own, so it is not re-read,
        unless another process wrote between the last refresh and it (then the next refresh reads both)."""
        mark, self._journal_mark = self._journal_mark, None
        if mark is not None and mark[0] == self._seen_seq:
            self._seen_seq = mark[1]

    def _refresh(self) -> None:
        """Bring the in-memory vectors up to what other processes committed (a no-op, one tiny query, when
        nothing was)."""
        if self.db.path == ":memory:" or not self.db.is_open:
            return
        with self.db.read() as conn:
            if _latest(conn) == self._seen_seq:
                return
        with self.db.lock:  # no batch of this process in flight: its own changes are published
            with self.db.read() as conn:
                conn.execute("BEGIN")  # one snapshot for the journal and the rows it names
                try:
                    latest = _latest(conn)
                    if latest == self._seen_seq:
                        return
                    lowest = conn.execute("SELECT min(seq) FROM vector_journal").fetchone()[0]
                    rows: dict[str, tuple[Any, ...] | None] | None = None
                    dropped: dict[str, list[tuple[Any, ...]]] = {}
                    if lowest is not None and lowest <= self._seen_seq + 1:  # else: pruned past this process
                        rows, dropped = self._changed_rows(conn)
                finally:
                    conn.execute("COMMIT")
            with self._state_lock:
                if rows is None:
                    logger.info("vector journal pruned past this process (seen=%d latest=%d): reloading",
                                self._seen_seq, latest)  # fmt: skip
                    self._load_all()
                else:
                    self._apply_rows(rows, dropped)
                self._seen_seq = latest

    def _changed_rows(
        self, conn: sqlite3.Connection
    ) -> tuple[dict[str, tuple[Any, ...] | None], dict[str, list[tuple[Any, ...]]]]:
        ids: dict[str, None] = {}
        dropped: dict[str, None] = {}
        for memory_ids, cubes in conn.execute(
            "SELECT memory_ids, dropped FROM vector_journal WHERE seq > ? ORDER BY seq", (self._seen_seq,)
        ):
            ids.update(dict.fromkeys(json.loads(memory_ids)))
            dropped.update(dict.fromkeys(json.loads(cubes)))
        cube_rows = {
            cube_id: conn.execute(
                f"SELECT {_ROW} FROM vector_items WHERE cube_id=? AND embedding IS NOT NULL ORDER BY rowid",
                (cube_id,),
            ).fetchall()
            for cube_id in dropped
        }
        rows: dict[str, tuple[Any, ...] | None] = dict.fromkeys(ids)
        for row in conn.execute(  # a dropped cube's vectors are read with its cube's rows, not again here
            "SELECT memory_id, cube_id, memory_type, status, IIF(cube_id IN (SELECT value FROM json_each(?2)),"
            " NULL, embedding) FROM vector_items WHERE memory_id IN (SELECT value FROM json_each(?1))",
            (json.dumps(list(ids)), json.dumps(list(dropped))),
        ):
            rows[row[0]] = row
        return rows, cube_rows

    def _apply_rows(self, rows: dict[str, tuple[Any, ...] | None], dropped: dict[str, list[tuple[Any, ...]]]) -> None:
        """Publish the current rows (state lock held): a dropped cube is rebuilt from its rows, every other
        memory named is put as its row says (a missing row: the memory has no vector any more)."""
        for cube_id, cube_rows in dropped.items():
            old = self._cubes.pop(cube_id, None)
            if old is not None:
                for memory_id in old.row_of:
                    self._where.pop(memory_id, None)
            if cube_rows:
                self._load_cube(cube_rows)
        puts: list[Change] = []
        for memory_id, row in rows.items():
            if row is None:
                gone = self._where.pop(memory_id, None)
                cube = self._cubes.get(gone) if gone is not None else None
                if cube is not None:
                    cube.remove(memory_id)
                continue
            _, cube_id, memory_type, status, blob = row
            if cube_id in dropped:  # its row was just loaded with its cube's
                continue
            vector = np.frombuffer(blob, dtype="<f4") if blob is not None else None
            puts.append(Put(memory_id, cube_id, vector, memory_type, status == "activated"))
        self._publish_all(puts)
