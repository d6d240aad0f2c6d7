"""Admission of searches: a few run at once, the rest wait briefly or are refused with 429 and Retry-After.

A search costs tens of CPU-milliseconds; on a small machine, searches admitted without bound all slow
down together (with 50 clients each waiting on the next, every search queues behind all the others and
p95 grows with the number of clients). The gate keeps the latency of what it admits near idle: at most
``max_active`` searches run at once; one that cannot start within ``queue_ms`` is refused with
:class:`SearchesBusy` (HTTP 429 and ``Retry-After``) instead of waiting unboundedly, and a user who
already has ``per_user`` searches running or waiting is refused at once, so one tenant's burst queues
behind nobody but itself. Waiters are served first come, first served, except that a user whose last
search was refused for want of a slot waits ahead of the others: refusals come in bursts (many clients
asking at once), and without this a few clients could be refused many times in a row while others get in.

Under overload (the oldest waiter has waited ``lifo_after_ms``), a freed slot goes to the newest waiter
instead: adaptive LIFO, as in Facebook's "Fail at Scale" (ACM Queue, 2015). First come, first served would
make every admitted search wait out most of the queue time when the queue never drains; LIFO admits what
can start now and lets the oldest waiters, which would have been slow anyway, run out of time (429). The
number refused is the same (capacity is what it is); the admitted ones are fast.

The same paper bounds queueing delay under overload (its controlled delay): a burst may wait up to
``queue_ms``, but while the gate is in LIFO mode, a freed slot first refuses every waiter that has waited
``overload_queue_ms`` or more. Under a standing queue, a late admission only adds latency (the server
serves what its capacity allows either way), and the client is better told at once to come back after
``Retry-After``; without it, the oldest waiters, passed over by LIFO, were still admitted after 30-50 ms
whenever the newer ones ran out, and made the p95.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from memos.application.errors import SearchesBusy
from memos.application.shared import shared

__all__ = ["AdmissionStats", "SearchGate", "gate_for"]

_REMEMBER_REFUSED_S = 30.0
"""How long a user refused for want of a slot is served ahead of others when it asks again."""
_MAX_REMEMBERED = 10_000
"""Refused users remembered at most (the oldest are forgotten first)."""


class _Shed(Exception):
    """Set on a waiter refused under overload (it had waited ``overload_queue_ms`` when a slot freed)."""


@dataclass(slots=True)
class AdmissionStats:
    """What the gate did since start (for the status page and benchmarks)."""

    admitted: int = 0
    refused_busy: int = 0
    """Refused because no slot freed within the queue time."""
    refused_user: int = 0
    """Refused because the user already had ``per_user`` searches running or waiting."""


class SearchGate:
    """At most ``max_active`` searches at once; waiters for at most ``queue_ms``; ``per_user`` per user;
    newest waiter first once the oldest has waited ``lifo_after_ms`` (None: always oldest first), and then
    waiters older than ``overload_queue_ms`` refused (None: none).

    ``max_active`` 0 turns the gate off (every search is admitted at once). Safe on one event loop.
    ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(self, *, max_active: int, queue_ms: float, per_user: int, retry_after_s: float = 1.0,
                 lifo_after_ms: float | None = None, overload_queue_ms: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_active = max_active
        self.queue_s = max(0.0, queue_ms) / 1000
        self.overload_queue_s = None if overload_queue_ms is None else max(0.0, overload_queue_ms) / 1000
        """In LIFO mode, waiters this old are refused when a slot frees (None: they wait out ``queue_s``)."""
        self.per_user = per_user
        self.retry_after_s = retry_after_s
        self.lifo_after_s = None if lifo_after_ms is None else max(0.0, lifo_after_ms) / 1000
        self.stats = AdmissionStats()
        self._clock = clock
        self._active = 0
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        """Live or done waiters with the time each started waiting (done ones are skipped when met)."""
        self._retrying: deque[tuple[asyncio.Future[None], float]] = deque()
        """Waiters of users refused recently: served before ``_waiters``."""
        self._refused_at: dict[str, float] = {}
        """User -> when a search of theirs was last refused for want of a slot (oldest first)."""
        self._by_user: dict[str, int] = {}

    @property
    def active(self) -> int:
        """Searches running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Searches waiting for a slot now."""
        return sum(1 for w, _ in (*self._retrying, *self._waiters) if not w.done())

    @asynccontextmanager
    async def enter(self, user_id: str) -> AsyncIterator[None]:
        """Hold a search slot for ``user_id`` while the block runs; SearchesBusy when refused."""
        if self.max_active <= 0:
            self.stats.admitted += 1
            yield
            return
        if self.per_user > 0 and self._by_user.get(user_id, 0) >= self.per_user:
            self.stats.refused_user += 1
            raise SearchesBusy(
                f"user {user_id!r} already has {self.per_user} searches running or waiting; "
                f"retry after {self.retry_after_s:g}s", retry_after=self.retry_after_s)
        self._by_user[user_id] = self._by_user.get(user_id, 0) + 1
        try:
            await self._acquire(user_id)
            self._refused_at.pop(user_id, None)
            self.stats.admitted += 1
            try:
                yield
            finally:
                self._release()
        finally:
            left = self._by_user[user_id] - 1
            if left:
                self._by_user[user_id] = left
            else:
                del self._by_user[user_id]

    def _was_refused(self, user_id: str) -> bool:
        at = self._refused_at.get(user_id)
        return at is not None and self._clock() - at < _REMEMBER_REFUSED_S

    def _remember_refused(self, user_id: str) -> None:
        self._refused_at.pop(user_id, None)
        self._refused_at[user_id] = self._clock()
        while len(self._refused_at) > _MAX_REMEMBERED:
            del self._refused_at[next(iter(self._refused_at))]

    async def _acquire(self, user_id: str) -> None:
        if self._active < self.max_active and not self.waiting:
            self._active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._retrying if self._was_refused(user_id) else self._waiters).append((waiter, self._clock()))
        try:
            async with asyncio.timeout(self.queue_s):
                await waiter
        except (TimeoutError, _Shed) as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return  # the slot was handed over as the wait timed out
            waiter.cancel()
            self.stats.refused_busy += 1
            self._remember_refused(user_id)
            within = self.queue_s if isinstance(exc, TimeoutError) else self.overload_queue_s or 0.0
            raise SearchesBusy(
                f"{self._active} searches are running and {self.waiting} waiting; none could start within "
                f"{within * 1000:g} ms: retry after {self.retry_after_s:g}s", retry_after=self.retry_after_s,
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # cancelled after the slot was handed over: pass it on
            else:
                waiter.cancel()
            raise

    def _release(self) -> None:
        """Hand the slot to a live waiter (recently refused users first; the oldest, or under overload the
        newest), or free it."""
        for queue in (self._retrying, self._waiters):
            while queue and queue[0][0].done():
                queue.popleft()
            if not queue:
                continue
            now = self._clock()
            newest_first = self.lifo_after_s is not None and now - queue[0][1] >= self.lifo_after_s
            if newest_first and self.overload_queue_s is not None:
                while queue and now - queue[0][1] >= self.overload_queue_s:  # overload: no late admissions
                    shed, _ = queue.popleft()
                    if not shed.done():
                        shed.set_exception(_Shed())
            while queue:
                waiter, _ = queue.pop() if newest_first else queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on: ``_active`` is unchanged
                    return
        self._active -= 1


def gate_for(owner: object, *, max_active: int, queue_ms: float, per_user: int, retry_after_s: float,
             lifo_after_ms: float | None = None, overload_queue_ms: float | None = None) -> SearchGate:
    """The one gate of ``owner`` (a runtime): every front end over the same runtime shares its slots."""
    return shared(owner, SearchGate, lambda: SearchGate(
        max_active=max_active, queue_ms=queue_ms, per_user=per_user, retry_after_s=retry_after_s,
        lifo_after_ms=lifo_after_ms, overload_queue_ms=overload_queue_ms))
