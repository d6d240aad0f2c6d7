"""The SQLite database of the embedded projections: connection, WAL, schema and checkpoint table.

One database file can hold the graph, vector and keyword projections side by side (and the control
store's tables): every projection keeps its checkpoint in the shared ``checkpoints`` table, keyed by
(projection, topic, partition), and writes it in the same transaction as its data.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from memory_store.base import Projection
from memory_store.embedded.wal import SAFETY_PAGES, WalCheckpointer, checkpointer_for, release_checkpointer
from schemas.envelope import Position
from schemas.errors import ConfigError, StoreError, StoreUnavailable
from schemas.ops import AnyOp

__all__ = ["CHECKPOINT_SCHEMA", "EmbeddedDatabase", "EmbeddedProjection", "runs_by_kind", "sqlite_path"]

logger = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (projection TEXT, topic TEXT, partition INTEGER, offset INTEGER,
    PRIMARY KEY (projection, topic, partition));
"""
"""The checkpoint table, identical in every embedded store (and the control store) sharing a file."""

Synchronous = Literal["OFF", "NORMAL", "FULL"]
_SCHEMES = ("sqlite", "embedded")


def sqlite_path(url: str | Path) -> str:
    """Database path of ``sqlite:///abs/path.db`` (also ``sqlite:////abs/path.db``, a plain path, or
    ``sqlite:///:memory:``). Raises ConfigError for another scheme or an empty path."""
    if isinstance(url, Path):
        return str(url)
    parts = urlsplit(url)
    if not parts.scheme:
        path = url
    elif parts.scheme in _SCHEMES:
        path = "/" + (parts.netloc + parts.path).lstrip("/")
        if path == "/:memory:":
            path = ":memory:"
    else:
        raise ConfigError(f"not an embedded store URL: {url!r} (expected sqlite:///abs/path.db)")
    if path in ("", "/"):
        raise ConfigError(f"embedded store URL has no path: {url!r}")
    return path


def runs_by_kind(ops: Sequence[AnyOp]) -> Iterator[Sequence[AnyOp]]:
    """The longest runs of consecutive ops of one type, in order (each store applies a run in one call)."""
    start = 0
    while start < len(ops):
        kind = type(ops[start])
        end = start + 1
        while end < len(ops) and type(ops[end]) is kind:
            end += 1
        yield ops[start:end]
        start = end


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn sqlite3 errors into our tree: operational (locked, busy, I/O) ones are retryable."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"sqlite database {path!r} failed: {exc}") from exc
    except (sqlite3.Error, UnicodeEncodeError) as exc:
        raise StoreError(f"sqlite database {path!r} failed: {exc}") from exc


class EmbeddedDatabase:
    """A writer and a reader sqlite3 connection in WAL mode, each used by one thread at a time.

    Reads go through their own connection, so they see the last committed state and never wait for a
    write batch in progress (a ``:memory:`` database has one connection for both).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = 30.0,
        cache_mb: int = 32,
        page_size: int = 16384,
    ) -> None:
        self.path = path
        self.page_size = page_size
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.cache_mb = cache_mb
        self.lock = threading.RLock()
        """Held by the writer: one write transaction at a time (and whatever must follow it in order)."""
        self._read_lock = self.lock if path == ":memory:" else threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._wal: WalCheckpointer | None = None
        """Checkpoints the file's log after commits, off the writer's thread (``memory_store.embedded.wal``)."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout_s
        )
        conn.execute(f"PRAGMA cache_size=-{self.cache_mb * 1024}")
        return conn

    def open(self, schema: str) -> None:
        """Connect, switch to WAL and create ``schema`` plus the checkpoint table. Idempotent."""
        with self.lock, self._read_lock:
            if self._conn is not None:
                return
            with _translated(self.path):
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = self._connect()
                try:
                    # Only takes effect on a new file; larger pages make rows with vector blobs much cheaper.
                    conn.execute(f"PRAGMA page_size={int(self.page_size)}")
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")
                    conn.executescript(CHECKPOINT_SCHEMA + schema)
                    reader = conn if self.path == ":memory:" else self._connect()
                    if reader is not conn:
                        conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_PAGES}")
                except BaseException:
                    conn.close()
                    raise
            self._conn, self._reader = conn, reader
            if reader is not conn:
                self._wal = checkpointer_for(str(Path(self.path).resolve()))
            logger.info("opened embedded store path=%s synchronous=%s", self.path, self.synchronous)

    def close(self) -> None:
        """Close both connections. Idempotent."""
        with self.lock, self._read_lock:
            for conn in {id(c): c for c in (self._conn, self._reader) if c is not None}.values():
                conn.close()
            self._conn = self._reader = None
            if self._wal is not None:
                release_checkpointer(self._wal.path)
                self._wal = None

    @property
    def is_open(self) -> bool:
        """Whether ``open`` was called and ``close`` was not."""
        return self._conn is not None

    def _connection(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise StoreError(f"embedded store {self.path!r} is not started (call start() first)")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The reader connection (autocommit: each statement sees the last commit); errors translated."""
        with self._read_lock, _translated(self.path):
            yield self._connection(self._reader)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any exception."""
        with self.lock, _translated(self.path):
            conn = self._connection(self._conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        wal = self._wal
        if wal is not None:
            wal.poke()

    @staticmethod
    def checkpoint_in(conn: sqlite3.Connection, projection: str, topic: str, partition: int) -> int | None:
        """Checkpoint read inside an open connection or transaction."""
        row = conn.execute(
            "SELECT offset FROM checkpoints WHERE projection=? AND topic=? AND partition=?",
            (projection, topic, partition),
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def set_checkpoint_in(
        conn: sqlite3.Connection, projection: str, topic: str, partition: int, offset: int
    ) -> None:
        """Checkpoint write inside the caller's transaction."""
        conn.execute(
            "INSERT INTO checkpoints (projection, topic, partition, offset) VALUES (?,?,?,?)"
            " ON CONFLICT (projection, topic, partition) DO UPDATE SET offset=excluded.offset",
            (projection, topic, partition, offset),
        )


class EmbeddedProjection(Projection):
    """Shared lifecycle and checkpointed batch apply of the embedded stores.

    Subclasses provide ``_schema`` and ``_apply_ops`` (inside the write transaction) and may use the
    ``_begin_batch`` / ``_commit_batch`` / ``_abort_batch`` hooks to keep in-memory state in step:
    ``_commit_batch`` runs only after the transaction committed.
    """

    reads_float32_bytes: ClassVar[bool] = True
    """Embeddings may come as ``schemas.codec.Float32Vector`` (bytes, floats made when read): every embedded
    store uses the float32 bytes alone (``float32_blob``), or no embedding at all."""

    folds_revisions: ClassVar[bool] = True
    """A revision's effect is ``processors.fold.revised``'s: replays may fold revisions into the upserts
    they follow (``fold_revisions``), which leaves every embedded store in the same state."""

    def __init__(
        self,
        url: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = 30.0,
        namespace: str = "",
    ) -> None:
        self.url = str(url)
        self.namespace = namespace
        self.db = EmbeddedDatabase(sqlite_path(url), synchronous=synchronous, busy_timeout_s=busy_timeout_s)

    @abstractmethod
    def _schema(self) -> str:
        """DDL of this store's tables (CREATE ... IF NOT EXISTS)."""

    @abstractmethod
    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[AnyOp]) -> None:
        """Write ``ops`` (those of every position of a batch, in order) inside the open transaction, with
        the effect of applying them one by one; every op must be idempotent."""

    def _on_open(self) -> None:
        """Load in-memory state after the database opened (runs in a worker thread)."""

    def _begin_batch(self) -> None:
        """A write transaction starts."""

    def _commit_batch(self) -> None:
        """The transaction committed: publish staged in-memory changes."""

    def _abort_batch(self) -> None:
        """The transaction rolled back: forget staged in-memory changes."""

    def _start_sync(self) -> None:
        if self.db.is_open:
            return
        self.db.open(self._schema())
        try:
            self._on_open()
        except BaseException:
            self.db.close()
            raise

    async def start(self) -> None:
        """Open the database, create tables, load in-memory state. Idempotent. Raises StoreUnavailable."""
        await asyncio.to_thread(self._start_sync)

    async def aclose(self) -> None:
        """Close the database. Idempotent; every committed write is already durable."""
        await asyncio.to_thread(self.db.close)

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        """Offset of the last record applied from that partition, or None."""

        def read() -> int | None:
            with self.db.read() as conn:
                return self.db.checkpoint_in(conn, self.name, topic, partition)

        return await asyncio.to_thread(read)

    async def apply(self, ops: Sequence[AnyOp], position: Position, *, replay: bool = False) -> bool:
        """Apply ``ops`` from ``position`` with its checkpoint in one transaction; False if already applied."""
        return (await self.apply_many([(ops, position)], replay=replay))[0]

    async def apply_many(
        self, batch: Sequence[tuple[Sequence[AnyOp], Position]], *, replay: bool = False
    ) -> list[bool]:
        """Apply a batch of (ops, position) in ONE transaction; per position, whether it was applied.

        Each position is skipped when at or below its partition's checkpoint (including positions
        earlier in the same batch), exactly as if ``apply`` were called for each in turn. With
        ``replay=True`` every position is applied and no checkpoint is written.
        Raises StoreUnavailable (retryable), DimensionMismatch or StoreError; nothing is written then.
        """
        if not batch:
            return []
        return await asyncio.to_thread(self._apply_many_sync, batch, replay)

    def _apply_many_sync(self, batch: Sequence[tuple[Sequence[AnyOp], Position]], replay: bool) -> list[bool]:
        with self.db.lock:  # staged in-memory changes are published before the next batch begins
            return self._apply_locked(batch, replay)

    def _apply_locked(self, batch: Sequence[tuple[Sequence[AnyOp], Position]], replay: bool) -> list[bool]:
        applied: list[bool] = []
        try:
            with self.db.write() as conn:
                self._begin_batch()
                marks: dict[tuple[str, int], int | None] = {}
                dirty: set[tuple[str, int]] = set()
                todo: list[AnyOp] = []  # the ops of every position applied, in order: one call, runs batched
                for ops, position in batch:
                    if replay:
                        todo.extend(ops)
                        applied.append(True)
                        continue
                    key = (position.topic, position.partition)
                    if key not in marks:
                        marks[key] = self.db.checkpoint_in(conn, self.name, *key)
                    mark = marks[key]
                    if mark is not None and position.offset <= mark:
                        applied.append(False)
                        continue
                    todo.extend(ops)
                    marks[key] = position.offset
                    dirty.add(key)
                    applied.append(True)
                self._apply_ops(conn, todo)
                for key in dirty:
                    offset = marks[key]
                    assert offset is not None
                    self.db.set_checkpoint_in(conn, self.name, key[0], key[1], offset)
        except BaseException:
            self._abort_batch()
            raise
        self._commit_batch()
        if logger.isEnabledFor(logging.DEBUG):
            last = batch[-1][1]
            logger.debug(
                "applied projection=%s topic=%s partition=%d offset=%d positions=%d skipped=%d replay=%s",
                self.name,
                last.topic,
                last.partition,
                last.offset,
                len(batch),
                applied.count(False),
                replay,
            )
        return applied
