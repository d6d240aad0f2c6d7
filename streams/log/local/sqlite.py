"""SQLite plumbing of the embedded log: schema, the single writer thread, reader threads (wake-ups: ``notify``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from schemas.envelope import Header
from schemas.errors import BrokerUnavailable, TransportError
from streams.log.local.lock_wait import Attempt, LockWait
from streams.log.local.notify import Notifier, notifier_for

__all__ = [
    "SCHEMA",
    "execute_when_free",
    "Notifier",
    "SqliteReader",
    "SqliteWriter",
    "Synchronous",
    "map_sqlite_errors",
    "notifier_for",
    "pack_headers",
    "unpack_headers",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL", "full", "normal"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO log_meta (name, value) VALUES ('topology', 0);
CREATE TABLE IF NOT EXISTS log_topics (
    topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_partitions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, headers BLOB, timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset));
CREATE TABLE IF NOT EXISTS log_groups (group_id TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_members (
    group_id TEXT NOT NULL, member_id TEXT NOT NULL, topics TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, member_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_owners (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, member_id TEXT NOT NULL,
    PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_group_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_group_attempts (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
"""
"""Tables of the embedded log. ``log_partitions.next_offset`` is the high watermark, so deleting rows
(forget_key) never lets an offset be handed out twice. ``log_group_attempts`` counts, per group and
partition, the attempts at processing the record at ``offset`` (poison records that kill the process). There is no index on keys: a key lives on one
partition (``partition_for``), so forgetting it scans that partition only, and appends stay fast."""

_HEADER = struct.Struct(">HI")
_MAX_COALESCE = 512


def pack_headers(headers: Sequence[Header]) -> bytes | None:
    """Headers as length-prefixed bytes (name utf-8, value bytes); None when there are none."""
    if not headers:
        return None
    parts: list[bytes] = []
    for name, value in headers:
        raw = name.encode()
        parts += [_HEADER.pack(len(raw), len(value)), raw, bytes(value)]
    return b"".join(parts)


def unpack_headers(blob: bytes | None) -> tuple[Header, ...]:
    """Inverse of ``pack_headers``."""
    if not blob:
        return ()
    out: list[Header] = []
    pos = 0
    while pos < len(blob):
        name_len, value_len = _HEADER.unpack_from(blob, pos)
        pos += _HEADER.size
        name = blob[pos : pos + name_len].decode()
        pos += name_len
        out.append((name, bytes(blob[pos : pos + value_len])))
        pos += value_len
    return tuple(out)


@contextlib.contextmanager
def map_sqlite_errors(action: str, path: Path) -> Iterator[None]:
    """Translate sqlite3 errors: busy, locked or unopenable files -> BrokerUnavailable, others -> TransportError."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if any(word in text for word in ("locked", "busy", "unable to open", "disk i/o")):
            raise BrokerUnavailable(f"embedded log {str(path)!r}: {action} failed: {exc}") from exc
        raise TransportError(f"embedded log {str(path)!r}: {action} failed: {exc}") from exc
    except sqlite3.Error as exc:
        raise TransportError(f"embedded log {str(path)!r}: {action} failed: {exc}") from exc


def execute_when_free(conn: sqlite3.Connection, sql: str, deadline: float) -> None:
    """``sql``, tried again every 0.1-1 ms while SQLite answers busy or locked, until ``deadline`` (monotonic).

    Also covers the busy answers SQLite gives without calling its busy handler: two processes switching a
    new file to WAL at once both hold a shared lock, and one is refused at once (deadlock avoidance)."""
    pause = 0.0001
    while True:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.001)


def _connect(path: Path, *, synchronous: str, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        execute_when_free(conn, "PRAGMA journal_mode=WAL", time.monotonic() + busy_timeout_s)
    except BaseException:
        conn.close()
        raise
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


_AUTOCHECKPOINT_PAGES = 1000
"""SQLite's default ``wal_autocheckpoint``, restored after a ``SqliteWriter.attempt`` commit."""

_IDLE_CHECKPOINT_S = 1.0
"""After this long without a job, the writer thread checkpoints the WAL grown by ``attempt`` commits."""


@dataclass
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    coalesce: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    topics: frozenset[str] = frozenset()


class SqliteWriter:
    """The one thread that writes the file: each job runs in a ``BEGIN IMMEDIATE`` transaction.

    Consecutive coalescable jobs (appends) share one transaction and one fsync (group commit); if that
    shared transaction fails, each job is retried alone so one bad job cannot fail the others.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout_s: float,
        on_commit: Callable[[frozenset[str]], None],
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Job[object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._executing = threading.Lock()
        """Held while the connection is in use: by the writer thread for each run, by ``attempt``."""
        self._mutex = threading.Lock()
        self._inflight = 0
        """Jobs submitted and not yet finished (``attempt`` only runs when none is, so order is kept)."""
        self._closing = False
        """Set by ``close``: no new job is taken (``submit`` refuses, ``attempt`` says "closed")."""
        self._direct_commits = 0
        """Commits made by ``attempt`` since the last idle checkpoint (they leave the WAL to this thread)."""
        self._lock_waits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LockWait] = weakref.WeakKeyDictionary()

    def start(self) -> None:
        """Open the connection and start the thread (connection errors surface on the first job)."""
        if self._thread is not None:
            return
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"memos-log-writer:{self._path.name}", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        """True before ``start`` and after ``close``."""
        return self._thread is None

    async def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, coalesce: bool = False, topics: Iterable[str] = ()
    ) -> T:
        """Run ``fn(conn)`` inside a write transaction on the writer thread; return its result.

        Coalescable jobs (appends) call ``on_commit`` with the ``topics`` they wrote once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._mutex:  # the put too: no job may land behind ``close``'s end marker
            if self._thread is None or self._closing:
                raise TransportError(f"embedded log {str(self._path)!r} is not started or is closing")
            self._inflight += 1
            self._queue.put(_Job(fn, coalesce, loop, fut, frozenset(topics)))  # type: ignore[arg-type]
        return await fut

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, coalesce: bool = False, topics: Iterable[str] = ()
    ) -> T:
        """``fn(conn)`` in a write transaction: right here when that can be done at once (``attempt``); while
        another process holds the file's write lock, on this event loop once it is let go (``LockWait``); else
        on the writer thread (``submit``, with ``coalesce`` and ``topics`` as there). Appends and every other
        write (offset commits, attempt counts, heartbeats) go through here: when those others queued on the
        writer thread, no append could take the direct path while one was queued (order is kept), and under
        load a third of the server's appends waited two thread hops (p95 14 ms under ``bench.load``)."""
        outcome, results = self.attempt([fn], topics=topics)
        if outcome == "done":
            return results[0]  # type: ignore[index,no-any-return]
        if outcome == "busy":
            waited: T = await self._lock_wait().wait(fn, frozenset(topics))
            return waited
        return await self.submit(fn, coalesce=coalesce, topics=topics)

    def attempt(
        self, fns: Sequence[Callable[[sqlite3.Connection], Any]], *, topics: Iterable[str] = ()
    ) -> tuple[Attempt, list[Any] | None]:
        """Run ``fns`` in one write transaction on the calling thread, if that can be done at once: no job
        is queued or running here, commits do not sync to disk (``synchronous=NORMAL``: an fsync is not for
        the caller's thread), and the file's write lock is free (no waiting: another process may hold it).
        ("done", results) when committed; ("busy", None) when another connection holds the write lock;
        ("occupied", None) when this writer is in use, the commits sync, or ``BEGIN`` failed otherwise (``submit``
        instead, which reports that failure); ("closed", None) after ``close``. A job that raises rolls the
        transaction back and the error propagates.

        This saves an append the two thread hops of ``submit`` (a saturated machine made each wait for a
        core). The commit never checkpoints the WAL here (``wal_autocheckpoint`` is off around it): the
        writer thread's own commits and other processes' do that, off the caller's thread.
        """
        with self._mutex:
            if self._thread is None or self._closing:
                return "closed", None
            if self._synchronous.upper() != "NORMAL" or self._inflight or not self._executing.acquire(blocking=False):
                return "occupied", None
        try:
            conn = self._connection()
            try:
                self._begin(conn, patience_s=0.0)  # one try
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                return ("busy" if "locked" in text or "busy" in text else "occupied"), None
            try:
                results = [fn(conn) for fn in fns]
                conn.execute("PRAGMA wal_autocheckpoint=0")
                try:
                    conn.execute("COMMIT")
                finally:
                    conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            self._executing.release()
        self._direct_commits += 1
        topics = frozenset(topics)
        if topics:
            self._on_commit(topics)
        return "done", results

    def _lock_wait(self) -> LockWait:
        """The waiters of the running event loop (one ``LockWait`` per loop that writes here)."""
        loop = asyncio.get_running_loop()
        wait = self._lock_waits.get(loop)
        if wait is None:
            wait = self._lock_waits[loop] = LockWait(self, busy_timeout_s=self._busy_timeout_s)
        return wait

    def close(self) -> None:
        """Finish queued jobs, close the connection and join the thread. Idempotent."""
        if self._thread is None:
            return
        with self._mutex:
            self._closing = True
            self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        pending: list[_Job[object]] = []
        stop = False
        while True:
            if not pending:
                if stop:
                    break
                try:
                    item = self._queue.get(timeout=_IDLE_CHECKPOINT_S)
                except queue.Empty:
                    self._checkpoint_direct_commits()
                    continue
                if item is None:
                    break
                pending.append(item)
            while not stop and len(pending) < _MAX_COALESCE:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pending.append(item)
            run = [pending.pop(0)]
            while run[0].coalesce and pending and pending[0].coalesce:
                run.append(pending.pop(0))
            with self._executing:
                outcomes = self._execute(run)
            for job, result, exc in outcomes:
                self._finish(job, result, exc)
        with self._executing:  # not under a transaction that ``attempt`` began before ``close``
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _begin(self, conn: sqlite3.Connection, *, patience_s: float | None = None) -> None:
        """``BEGIN IMMEDIATE``, trying again every 0.1-1 ms while another process holds the write lock.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries, so a lock held 3 ms
        cost its waiter up to 8 ms and one held 9 ms up to 18 (against another process appending while
        locked 3 ms in 5: waits p95 3.2 ms, max 57, where these tries give p95 1.9, max 3). Gives up, as
        SQLite would, after ``patience_s`` (default ``busy_timeout_s``; 0: one try)."""
        deadline = time.monotonic() + (self._busy_timeout_s if patience_s is None else patience_s)
        conn.execute("PRAGMA busy_timeout=0")
        try:
            execute_when_free(conn, "BEGIN IMMEDIATE", deadline)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")

    def _checkpoint_direct_commits(self) -> None:
        """Idle: checkpoint the WAL if commits made by ``attempt`` (which never checkpoint) grew it since."""
        if not self._direct_commits:
            return
        self._direct_commits = 0
        with self._executing:
            try:
                self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # the next idle spell or commit here tries again
                logger.debug("idle WAL checkpoint failed path=%s error=%s", self._path, exc)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _connect(
                self._path, synchronous=self._synchronous, busy_timeout_s=self._busy_timeout_s
            )
        return self._conn

    def _execute(self, jobs: list[_Job[object]]) -> list[tuple[_Job[object], object, BaseException | None]]:
        """Run jobs in one transaction (each alone if that fails); (job, result, error) of each, to finish
        once the connection is released."""
        try:
            conn = self._connection()
            self._begin(conn)
            try:
                results = [job.fn(conn) for job in jobs]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            if len(jobs) > 1:
                return [outcome for job in jobs for outcome in self._execute([job])]
            return [(jobs[0], None, exc)]
        if any(job.coalesce for job in jobs):
            self._on_commit(frozenset().union(*(job.topics for job in jobs if job.coalesce)))
        return [(job, result, None) for job, result in zip(jobs, results, strict=True)]

    def _finish(self, job: _Job[object], result: object, exc: BaseException | None) -> None:
        with self._mutex:
            self._inflight -= 1

        def deliver() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            job.loop.call_soon_threadsafe(deliver)


class SqliteReader:
    """Reader threads, each with its own connection; WAL lets them read while the writer writes."""

    def __init__(self, path: Path, *, busy_timeout_s: float, threads: int = 2) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="memos-log-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one read transaction (a consistent snapshot) on a reader thread."""
        if self._closed:
            raise TransportError(f"embedded log {str(self._path)!r} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Stop the threads and close their connections. Idempotent."""
        self._closed = True
        self._executor.shutdown(wait=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
