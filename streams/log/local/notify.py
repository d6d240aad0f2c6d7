"""Wake-ups of the embedded log's consumers: after appends in this process, and (a watcher thread) by others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Notifier", "notifier_for"]

logger = logging.getLogger(__name__)

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
