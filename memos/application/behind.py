"""Stages behind wherever they run: the oldest record a stage has not committed, waiting past a limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from memos.application.operations import Lag

__all__ = ["BehindWatch", "READ_EVERY_S", "behind_of"]

logger = logging.getLogger(__name__)

READ_EVERY_S = 10.0
"""/healthz reads the log for this at most this often (it is public); callers meanwhile get the last answer."""
READ_TIMEOUT_S = 30.0
"""A read of the log that takes longer is given up (logged); the last answer stands."""


def behind_of(lag: Mapping[tuple[str, str], Lag], after_s: float) -> list[str]:
    """One line per (stage, topic) whose oldest uncommitted record has waited over ``after_s`` seconds."""
    return [f"{group} on {topic}: {it.records} records waiting, the oldest for {it.waited_s:.0f} s"
            for (group, topic), it in lag.items() if it.waited_s is not None and it.waited_s > after_s]


class BehindWatch:
    """The last answer of ``behind_of``, read again in the background when it is older than ``READ_EVERY_S``:
    asking never waits for the log (a liveness probe must not), and a flood of asks reads it once."""

    def __init__(self, *, read_every_s: float = READ_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.read_every_s = read_every_s
        self._clock = clock
        self._read_at = float("-inf")
        self._behind: list[str] = []
        self._reading: asyncio.Task[None] | None = None

    def behind(self, read: Callable[[], Awaitable[list[str]]]) -> list[str]:
        """The last answer (empty before the first read ends); starts a read when it is stale and none runs."""
        now = self._clock()
        if now - self._read_at >= self.read_every_s and (self._reading is None or self._reading.done()):
            self._read_at = now
            self._reading = asyncio.create_task(self._read(read), name="behind-watch")
        return list(self._behind)

    async def _read(self, read: Callable[[], Awaitable[list[str]]]) -> None:
        try:
            self._behind = await asyncio.wait_for(read(), READ_TIMEOUT_S)
        except Exception as exc:  # a log that is down or slow: /healthz goes on with the last answer
            logger.warning("could not read how far the stages are behind (the last answer stands): %r", exc)
