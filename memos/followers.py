"""Waiting on consumer groups' progress: waits woken only when their own targets are reached, and one poller per
group hosted elsewhere reading the log's committed offsets while anybody waits (50 sync adds waiting were 1,000
reads a second)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Mapping
from contextlib import suppress

from streams.log.base import EventLog, TopicPartition

__all__ = ["CommittedFollower", "GroupProgress", "first_done"]

logger = logging.getLogger(__name__)

_Waiter = tuple[Mapping[TopicPartition, int], "asyncio.Future[None]"]


class GroupProgress:
    """Offsets per consumer group (they only rise) and waits on them, each woken once, when its targets are met.

    A condition that woke every waiter at every commit of any group made 50 waiting sync adds 50 wake-ups (and
    checks) per commit, on the loop that also answers requests; here a commit checks only its group's waits
    and wakes none that is not done.
    """

    def __init__(self) -> None:
        self._offsets: dict[str, dict[TopicPartition, int]] = {}
        self._waiters: dict[str, list[_Waiter]] = {}

    def reached(self, group: str, targets: Mapping[TopicPartition, int]) -> bool:
        """Whether ``group`` is at or past every (topic, partition) -> offset target."""
        offsets = self._offsets.get(group, {})
        return all(offsets.get(tp, 0) >= offset for tp, offset in targets.items())

    def advance(self, group: str, offsets: Mapping[TopicPartition, int]) -> bool:
        """Raise the group's offsets to these (never lower) and wake the waits now met; whether any rose."""
        known = self._offsets.setdefault(group, {})
        moved = False
        for tp, offset in offsets.items():
            if offset > known.get(tp, 0):
                known[tp] = offset
                moved = True
        waiters = self._waiters.get(group)
        if moved and waiters:
            waiting = []
            for targets, future in waiters:
                if future.done():
                    continue
                if self.reached(group, targets):
                    future.set_result(None)
                else:
                    waiting.append((targets, future))
            self._waiters[group] = waiting
        return moved

    async def wait(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float) -> None:
        """Return once ``group`` reached every target; TimeoutError naming the group after ``timeout_s``."""
        if self.reached(group, targets):
            return
        waiter: _Waiter = (targets, asyncio.get_running_loop().create_future())
        waiters = self._waiters.setdefault(group, [])
        waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter[1]
        except TimeoutError:
            raise TimeoutError(f"stage {group!r} did not reach {dict(targets)!r} in {timeout_s}s") from None
        finally:
            future = waiter[1]
            if not future.done() or future.cancelled():  # timed out or cancelled: nobody is left to wake
                future.cancel()
                waiters = self._waiters.get(group, [])
                for i, other in enumerate(waiters):
                    if other[1] is future:
                        del waiters[i]
                        break

    def waiting(self, group: str) -> int:
        """Waits on ``group`` not yet woken."""
        return sum(1 for _, future in self._waiters.get(group, ()) if not future.done())


class CommittedFollower:
    """Waits until a consumer group has committed past targets, polling every ``interval_s`` while waited on."""

    def __init__(self, log: EventLog, *, interval_s: float = 0.05) -> None:
        self.log = log
        self.interval_s = interval_s
        self.polls = 0
        """Rounds of reads of committed offsets so far (every group)."""
        self.progress = GroupProgress()
        """What the polls read, and the waits on it."""
        self._waited: dict[str, Counter[str]] = {}
        """Group -> topic -> how many waits need it."""
        self._pollers: dict[str, asyncio.Task[None]] = {}

    async def wait(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float) -> None:
        """Return once ``group`` (the full group id) committed past every target; TimeoutError after ``timeout_s``."""
        topics = Counter({tp[0] for tp in targets})
        waited = self._waited.setdefault(group, Counter())
        waited.update(topics)
        if group not in self._pollers:  # no await between this check and a poller's own exit check
            self._pollers[group] = asyncio.create_task(self._poll(group), name=f"follow:{group}")
        try:
            await self.progress.wait(group, targets, timeout_s=timeout_s)
        finally:
            waited.subtract(topics)
            for topic in [t for t, n in waited.items() if n <= 0]:
                del waited[topic]

    async def _poll(self, group: str) -> None:
        while True:
            topics = list(self._waited.get(group) or ())
            if not topics:
                self._pollers.pop(group, None)  # before any await: a new wait starts a new poller
                return
            try:
                for topic in topics:
                    committed = await self.log.committed(group, topic)
                    self.progress.advance(group, {(topic, p): offset for p, offset in committed.items()})
                self.polls += 1
            except Exception as exc:  # a busy or restarting log: the next round tries again
                logger.warning("reading committed offsets of group=%s failed: %s", group, exc)
            await asyncio.sleep(self.interval_s)  # the period of the poll, not a synchronisation

    async def aclose(self) -> None:
        """Stop the pollers (waits still running time out)."""
        pollers = list(self._pollers.values())
        self._pollers.clear()
        for task in pollers:
            task.cancel()
        for task in pollers:
            with suppress(asyncio.CancelledError):
                await task


async def first_done(*waits: Awaitable[object]) -> None:
    """Until the first of ``waits`` is done (its error raised); the others are cancelled, also when the caller
    is (a client gone): none of them lives on."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
    done.pop().result()
