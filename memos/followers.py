"""Following stages that other processes host: one poller per consumer group reads the log's committed offsets
while anybody waits on that group, however many wait (50 sync adds waiting were 1,000 reads a second)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from contextlib import suppress

from streams.log.base import EventLog, TopicPartition

__all__ = ["CommittedFollower"]

logger = logging.getLogger(__name__)


class CommittedFollower:
    """Waits until a consumer group has committed past targets, polling every ``interval_s`` while waited on."""

    def __init__(self, log: EventLog, *, interval_s: float = 0.05) -> None:
        self.log = log
        self.interval_s = interval_s
        self.polls = 0
        """Rounds of reads of committed offsets so far (every group)."""
        self._progress: dict[str, dict[TopicPartition, int]] = {}
        self._waited: dict[str, Counter[str]] = {}
        """Group -> topic -> how many waits need it."""
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()

    def _reached(self, group: str, targets: Mapping[TopicPartition, int]) -> bool:
        progress = self._progress.get(group, {})
        return all(progress.get(tp, 0) >= offset for tp, offset in targets.items())

    async def wait(self, group: str, targets: Mapping[TopicPartition, int], *, timeout_s: float) -> None:
        """Return once ``group`` (the full group id) committed past every target; TimeoutError after ``timeout_s``."""
        topics = Counter({tp[0] for tp in targets})
        waited = self._waited.setdefault(group, Counter())
        waited.update(topics)
        if group not in self._pollers:  # no await between this check and a poller's own exit check
            self._pollers[group] = asyncio.create_task(self._poll(group), name=f"follow:{group}")
        try:
            async with asyncio.timeout(timeout_s):
                async with self._changed:
                    await self._changed.wait_for(lambda: self._reached(group, targets))
        except TimeoutError:
            raise TimeoutError(f"stage {group!r} did not reach {dict(targets)!r} in {timeout_s}s") from None
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
            moved = False
            try:
                progress = self._progress.setdefault(group, {})
                for topic in topics:
                    for partition, offset in (await self.log.committed(group, topic)).items():
                        if offset > progress.get((topic, partition), 0):
                            progress[(topic, partition)] = offset
                            moved = True
                self.polls += 1
            except Exception as exc:  # a busy or restarting log: the next round tries again
                logger.warning("reading committed offsets of group=%s failed: %s", group, exc)
            if moved:  # waking every waiter each round for nothing was 1,000 wake-ups a second under 50 sync adds
                async with self._changed:
                    self._changed.notify_all()
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
