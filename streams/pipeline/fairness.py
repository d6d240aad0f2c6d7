"""Fair slots: a few workers (parser processes) shared by tenants, a freed one going to whoever holds fewest."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["FairSlots"]


class FairSlots:
    """``slots`` places taken by owners (users): a freed place goes to the waiting owner who holds the fewest,
    and among those to the one served longest ago, so one owner's queue of work never holds another's back by
    more than the places already taken. ``per_owner``: the most one owner holds (default: all), so places stay
    free for others who come later. In order of arrival within one owner; a cancelled waiter leaves."""

    def __init__(self, slots: int, *, per_owner: int | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.slots = slots
        self.per_owner = min(slots, per_owner or slots)
        self.busy = 0
        self.holding: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._served: dict[str, int] = {}
        self._turn = 0

    @asynccontextmanager
    async def held(self, owner: str) -> AsyncIterator[None]:
        """Hold one place for ``owner`` for the duration of the block."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(waiter)
        self._wake()  # a free place goes to this owner now unless another waiting one holds fewer
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted just as it was cancelled: pass it on
                self._release(owner)
            else:
                self._forget(owner, waiter)
            raise
        try:
            yield
        finally:
            self._release(owner)

    def waiting(self) -> int:
        """Waiters not yet given a place."""
        return sum(len(queue) for queue in self._waiting.values())

    def _grant(self, owner: str) -> None:
        self.busy += 1
        self.holding[owner] += 1
        self._turn += 1
        self._served[owner] = self._turn

    def _release(self, owner: str) -> None:
        self.busy -= 1
        self.holding[owner] -= 1
        if self.holding[owner] <= 0:
            del self.holding[owner]
        if len(self._served) > 4 * (len(self.holding) + len(self._waiting)) + 64:  # owners long gone
            self._served = {o: t for o, t in self._served.items() if o in self.holding or o in self._waiting}
        self._wake()

    def _forget(self, owner: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[owner]

    def _wake(self) -> None:
        while self.busy < self.slots:
            ready = [o for o in self._waiting if self.holding.get(o, 0) < self.per_owner]
            if not ready:
                return
            owner = min(ready, key=lambda o: (self.holding.get(o, 0), self._served.get(o, 0)))
            queue = self._waiting[owner]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[owner]
            if waiter.done():  # cancelled while queued
                continue
            self._grant(owner)
            waiter.set_result(None)
