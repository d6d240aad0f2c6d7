"""Writes that find the embedded log's write lock held by another process wait for it on their event loop.

``memos serve`` shares its log file with its derivation child. When the child holds the write lock, an
append used to go to the writer thread, which waited for the lock and then ran it (and every append queued
behind it) beside a busy event loop: each SQLite step lets go of the interpreter lock, so the writer thread
waited up to a switch interval for it at every step, and its answer waited for the loop to wake. Under
``bench.load``'s bursts (a dozen or more async adds in one millisecond) such a batch took 15-20 ms to run and
its answers up to 30 ms more to be seen, which made the async ack p95. Here one poller task per loop tries
the lock every ``POLL_S`` (one try: no thread sleeps or spins) and, once it gets it, runs every waiting job
in one transaction on the loop (a group commit) and answers them directly.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from schemas.errors import TransportError

__all__ = ["POLL_S", "Attempt", "LockWait"]

logger = logging.getLogger(__name__)

Attempt = Literal["done", "busy", "occupied", "closed"]
"""What a try at a write transaction on the calling thread came to (``SqliteWriter.attempt``)."""

POLL_S = 0.001
"""How often waiting jobs try the write lock (an event loop's timers have about a millisecond's grain)."""


class _Writer(Protocol):
    def attempt(
        self, fns: Sequence[Callable[[sqlite3.Connection], Any]], *, topics: Iterable[str] = ()
    ) -> tuple[Attempt, list[Any] | None]: ...


@dataclass(slots=True)
class _Waiting:
    fn: Callable[[sqlite3.Connection], Any]
    topics: frozenset[str]
    future: asyncio.Future[Any]
    since: float


class LockWait:
    """Jobs of one event loop waiting for another connection to let go of the write lock, run on the loop.

    Jobs run in the order they came, all that wait in one transaction; a job that raises is retried alone
    so that it cannot fail the others. A job that has waited ``busy_timeout_s`` fails with SQLite's own
    "database is locked" (which the log reports as BrokerUnavailable). A waiter cancelled before its turn
    leaves its job unrun; once the writer is closed, waiting jobs fail with TransportError.
    """

    def __init__(self, writer: _Writer, *, busy_timeout_s: float) -> None:
        self.writer = writer
        self.busy_timeout_s = busy_timeout_s
        self._waiting: deque[_Waiting] = deque()
        self._poller: asyncio.Task[None] | None = None
        self.commits = 0
        """Transactions run here (the tests read it)."""

    @property
    def waiting(self) -> int:
        """Jobs waiting now."""
        return len(self._waiting)

    async def wait(self, fn: Callable[[sqlite3.Connection], Any], topics: frozenset[str]) -> Any:
        """Run ``fn(conn)`` in a write transaction on this loop as soon as the write lock is free; its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(_Waiting(fn, topics, future, time.monotonic()))
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll(), name="embedded-log:lock-wait")
        return await future

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(POLL_S)
            self._expire()
            batch = [w for w in self._waiting if not w.future.done()]
            self._waiting.clear()
            if batch:
                self._waiting.extendleft(reversed(self._run(batch)))

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting and now - self._waiting[0].since >= self.busy_timeout_s:
            late = self._waiting.popleft()
            if not late.future.done():
                late.future.set_exception(sqlite3.OperationalError("database is locked"))

    def _run(self, batch: list[_Waiting]) -> list[_Waiting]:
        """Try ``batch`` in one transaction; the jobs still waiting (all of them while the lock is held)."""
        topics = frozenset().union(*(w.topics for w in batch))
        try:
            outcome, results = self.writer.attempt([w.fn for w in batch], topics=topics)
        except Exception as exc:  # noqa: BLE001 - a job's own error, handed to its waiter
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return []
            for n, one in enumerate(batch):  # one at a time, so one bad job cannot fail the others
                left = self._run([one])
                if left:
                    return left + batch[n + 1:]  # the lock was taken again: the rest wait on
            return []
        except BaseException as exc:
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
            raise
        if outcome == "closed":
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(TransportError("the embedded log was closed while this write waited"))
            return []
        if outcome != "done" or results is None:
            return batch  # held elsewhere, or this writer's thread is using the connection: try again
        self.commits += 1
        for w, result in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)
        return []
