"""Admission of API-key checks: scrypt is slow on purpose, so guessing at a known key id must not cost the server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from memos.application.errors import KeyChecksBusy
from memos.application.shared import shared

__all__ = ["KeyCheckGate", "key_gate_for"]

logger = logging.getLogger(__name__)

_MAX_REMEMBERED = 10_000
"""Key ids whose last failed check is remembered (the oldest are forgotten first)."""


class KeyCheckGate:
    """Bounds the hash checks of API keys (the slow part: scrypt) in one process.

    At most ``at_once`` checks run at a time and ``waiting`` more may wait (beyond that: 429), so key
    checks take at most that many cores from serving; after a failed check of a key id, another check
    of that id within ``retry_s`` is refused (429 with Retry-After) without hashing, so guesses at a
    known key id cost almost nothing. A key that was verified is remembered by the front end and does
    not come here again; a new session of a key under such a guessing attack is refused until it stops.
    """

    def __init__(self, *, at_once: int = 1, waiting: int = 16, retry_s: float = 0.5) -> None:
        self.at_once = at_once
        self.waiting = waiting
        self.retry_s = retry_s
        self._slots = asyncio.Semaphore(at_once) if at_once > 0 else None
        self._queued = 0
        self._failed: OrderedDict[str, float] = OrderedDict()

    async def check(self, key_id: str, verify: Callable[[], Awaitable[str | None]]) -> str | None:
        """``verify()``'s answer (the key's user, or None) once admitted; KeyChecksBusy when refused."""
        failed_at = self._failed.get(key_id)
        now = time.monotonic()
        if failed_at is not None and now - failed_at < self.retry_s:
            raise KeyChecksBusy(f"key {key_id!r} failed a check {now - failed_at:.2f} s ago; retry later",
                                retry_after=self.retry_s)
        if self._slots is None:
            user = await verify()
        else:
            if self._queued >= self.at_once + self.waiting:
                raise KeyChecksBusy("too many API-key checks at once; retry later", retry_after=self.retry_s)
            self._queued += 1
            try:
                async with self._slots:
                    user = await verify()
            finally:
                self._queued -= 1
        if user is None:
            self._failed[key_id] = time.monotonic()
            self._failed.move_to_end(key_id)
            while len(self._failed) > _MAX_REMEMBERED:
                self._failed.popitem(last=False)
        else:
            self._failed.pop(key_id, None)
        return user


def key_gate_for(owner: object, *, at_once: int, waiting: int, retry_s: float) -> KeyCheckGate:
    """The one key-check gate of ``owner`` (a runtime): every front end over it shares the bounds."""
    return shared(owner, KeyCheckGate, lambda: KeyCheckGate(at_once=at_once, waiting=waiting, retry_s=retry_s))
