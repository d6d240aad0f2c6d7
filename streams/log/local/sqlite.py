"""SQLite plumbing of the embedded log: schema, the single writer thread, reader threads, wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from schemas.envelope import Header
from schemas.errors import BrokerUnavailable, TransportError

__all__ = [
    "SCHEMA",
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


def _connect(path: Path, *, synchronous: str, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


_AUTOCHECKPOINT_PAGES = 1000
"""SQLite's default ``wal_autocheckpoint``, restored after a ``SqliteWriter.try_now`` commit."""

_WATCH_INTERVAL_S = 0.05
"""How often the watcher looks for appends made by other processes (one tiny query, no event loop)."""


class Notifier:
    """Wake-up of consumers after appends; a version counter avoids lost wake-ups.

    Appends made in this process notify directly (the writer calls ``notify`` after each commit). Appends
    by other processes sharing the file are seen by one watcher thread per file and process
    (``watch``), which sums the partitions' high watermarks every ``_WATCH_INTERVAL_S`` and notifies when
    the sum moved without an in-process notification, so idle consumers never poll the log themselves.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._all = 0
        self._topics: dict[str, int] = {}
        self._waiters: list[_Waiter] = []
        self._watchers = 0
        self._watch_stop: threading.Event | None = None
        self.watch_interval_s = _WATCH_INTERVAL_S

    @property
    def version(self) -> int:
        """Number of notifications so far; read it before looking for records."""
        return self._version

    def version_of(self, topics: Iterable[str]) -> int:
        """Notifications that concern any of ``topics`` so far (pass it to ``wait`` with the same topics)."""
        with self._lock:
            return self._all + sum(self._topics.get(t, 0) for t in topics)

    def notify(self, topics: Iterable[str] | None = None) -> None:
        """Wake the waiters on any of ``topics`` (None: every waiter); callable from any thread.

        Appends name their topics, so a search that records an activation does not wake the stages
        that read other topics."""
        named = None if topics is None else frozenset(topics)
        with self._lock:
            self._version += 1
            if named is None:
                self._all += 1
                waiters, self._waiters = self._waiters, []
            else:
                for topic in named:
                    self._topics[topic] = self._topics.get(topic, 0) + 1
                waiters = [w for w in self._waiters if w.topics is None or not w.topics.isdisjoint(named)]
                self._waiters = [w for w in self._waiters if w not in waiters]
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)

    async def wait(self, seen: int, timeout_s: float, topics: Iterable[str] | None = None) -> None:
        """Return after a notification later than ``seen`` (``version`` or, with ``topics``,
        ``version_of(topics)``), or after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        named = None if topics is None else frozenset(topics)
        waiter = _Waiter(loop, loop.create_future(), named)
        with self._lock:
            now = self._version if named is None else self._all + sum(self._topics.get(t, 0) for t in named)
            if now != seen:
                return
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
        except TimeoutError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


    def watch(self, path: Path, *, busy_timeout_s: float) -> None:
        """Start (or share) the watcher thread for appends by other processes; pair with ``unwatch``."""
        with self._lock:
            self._watchers += 1
            if self._watch_stop is not None:
                return
            stop = self._watch_stop = threading.Event()
        threading.Thread(target=self._watch, args=(path, busy_timeout_s, stop),
                         name=f"memos-log-watch:{path.name}", daemon=True).start()  # fmt: skip

    def unwatch(self) -> None:
        """Release one ``watch``; the thread stops with the last one."""
        with self._lock:
            self._watchers = max(0, self._watchers - 1)
            if self._watchers or self._watch_stop is None:
                return
            stop, self._watch_stop = self._watch_stop, None
        stop.set()

    def _watch(self, path: Path, busy_timeout_s: float, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        last_total: int | None = None
        last_version = self._version
        try:
            while not stop.wait(self.watch_interval_s):
                version = self._version
                try:
                    if conn is None:
                        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                                               check_same_thread=False)  # fmt: skip
                        conn.execute("PRAGMA query_only=1")
                    total = int(conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM log_partitions")
                                .fetchone()[0])  # fmt: skip
                except sqlite3.Error as exc:
                    logger.debug("log watcher could not read %s: %s", path, exc)
                    continue
                if last_total is not None and total != last_total and version == last_version:
                    self.notify()  # records appended by another process: no in-process notification
                last_total, last_version = total, version
        finally:
            if conn is not None:
                conn.close()


@dataclass(eq=False, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    topics: frozenset[str] | None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_NOTIFIERS: weakref.WeakValueDictionary[str, Notifier] = weakref.WeakValueDictionary()
_NOTIFIERS_LOCK = threading.Lock()


def notifier_for(path: Path) -> Notifier:
    """The notifier shared by every LocalEventLog of this process on the same file."""
    key = str(path.resolve())
    with _NOTIFIERS_LOCK:
        found = _NOTIFIERS.get(key)
        if found is None:
            found = Notifier()
            _NOTIFIERS[key] = found
        return found


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
        """Held while the connection is in use: by the writer thread for each run, by ``try_now``."""
        self._mutex = threading.Lock()
        self._inflight = 0
        """Jobs submitted and not yet finished (``try_now`` only runs when none is, so order is kept)."""

    def start(self) -> None:
        """Open the connection and start the thread (connection errors surface on the first job)."""
        if self._thread is not None:
            return
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
        if self._thread is None:
            raise TransportError(f"embedded log {str(self._path)!r} is not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._mutex:
            self._inflight += 1
        self._queue.put(_Job(fn, coalesce, loop, fut, frozenset(topics)))  # type: ignore[arg-type]
        return await fut

    def try_now(self, fn: Callable[[sqlite3.Connection], T], *, topics: Iterable[str] = ()) -> tuple[bool, T | None]:
        """Run ``fn(conn)`` in a write transaction on the calling thread, if that can be done at once: no job
        is queued or running here, and the file's write lock is free (no waiting: another process may hold
        it). (True, result) when committed; (False, None) when the caller should ``submit`` instead.

        This saves an append the two thread hops of ``submit`` (a saturated machine made each wait for a
        core). The commit never checkpoints the WAL here (``wal_autocheckpoint`` is off around it): the
        writer thread's own commits and other processes' do that, off the caller's thread.
        """
        with self._mutex:
            if self._inflight or self._thread is None or not self._executing.acquire(blocking=False):
                return False, None
        try:
            conn = self._connection()
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False, None  # busy: another process holds the write lock
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            try:
                result = fn(conn)
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
        self._on_commit(frozenset(topics))
        return True, result

    def close(self) -> None:
        """Finish queued jobs, close the connection and join the thread. Idempotent."""
        if self._thread is None:
            return
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
                item = self._queue.get()
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
            conn.execute("BEGIN IMMEDIATE")
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
