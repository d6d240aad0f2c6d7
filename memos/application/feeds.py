"""Feed positions for front ends: cursors ('0:12,3:40', per partition the next offset) and their text form."""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from memos.application.errors import FeedsBusy
from memos.application.ports import Platform
from memos.application.shared import shared
from schemas.errors import ValidationFailed
from streams.feed import MAX_OFFSET, Cursor, format_cursor, parse_cursor, parse_offset, subscribe
from streams.log.base import EventLog

__all__ = ["MAX_OFFSET", "Cursor", "FeedSlots", "changes_for", "check_start", "feed_slots_for", "format_cursor",
           "parse_cursor", "parse_offset"]

logger = logging.getLogger(__name__)


def check_start(start: Any) -> None:
    """A feed's start: 'beginning', 'now', an offset or a cursor, with offsets and partitions in 0..MAX_OFFSET."""
    if isinstance(start, dict):
        field = "cursor"
        numbers = [n for item in start.items() for n in item]
    elif start in ("beginning", "now"):
        return
    else:
        field, numbers = "from", [start]
    if not all(type(n) is int and 0 <= n <= MAX_OFFSET for n in numbers):
        raise ValidationFailed(
            f"a feed starts at 'beginning', 'now', an offset or a cursor of offsets in 0..{MAX_OFFSET}, not "
            f"{str(start)[:64]!r}", field=field,
        )


class FeedSlots:
    """Feeds each user has open in this process (``door.feeds_per_user``): an open feed polls the log until it
    ends, so one user may hold only so many."""

    def __init__(self, per_user: int, retry_after_s: float) -> None:
        self.per_user = per_user
        self.retry_after_s = retry_after_s
        self.open: Counter[str] = Counter()

    def take(self, user_id: str) -> Callable[[], None]:
        """A slot for a new feed of ``user_id`` (FeedsBusy when the user has none left); call the returned
        function once the feed ends (later calls do nothing)."""
        if self.per_user and self.open[user_id] >= self.per_user:
            raise FeedsBusy(f"user {user_id!r} has {self.open[user_id]} feeds open; at most {self.per_user} at "
                            "once (door.feeds_per_user); close one or retry later", retry_after=self.retry_after_s)
        self.open[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[user_id] -= 1
                if self.open[user_id] <= 0:
                    del self.open[user_id]

        return release


def feed_slots_for(platform: Platform) -> FeedSlots:
    """The one count of open feeds of ``platform`` (a runtime): every front end over it shares it."""
    limits = platform.door_limits
    return shared(platform, FeedSlots, lambda: FeedSlots(limits.feeds_per_user, limits.search_retry_after_s))


class _Checks(Protocol):
    async def may_read(self, user_id: str, cube_id: str) -> bool: ...

    async def key_active(self, user_id: str, key_id: str) -> bool: ...


def changes_for(checks: _Checks, log: EventLog, user_id: str, cubes: list[str] | None, start: Any, follow: bool,
                everything: bool, *, key_id: str | None = None,
                release: Callable[[], None] | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """The feed's (envelope, cursor after it) pairs: it ends when the user may no longer read a cube it
    delivers from, or its key ``key_id`` was revoked; ``release`` (its slot) is called once it ends, or once
    it is dropped unread."""
    changes = _changes(checks, log, user_id, cubes, start, follow, everything, key_id, release)
    return changes if release is None else _Released(changes, release)


class _Released:
    """A feed that gives its slot back when it ends, is closed (read or not) or is dropped."""

    def __init__(self, changes: AsyncGenerator[tuple[Any, Any], None], release: Callable[[], None]) -> None:
        self._changes, self._release = changes, release
        weakref.finalize(self, release)

    def __aiter__(self) -> _Released:
        return self

    async def __anext__(self) -> tuple[Any, Any]:
        return await self._changes.__anext__()  # its own finally releases once it ends

    async def aclose(self) -> None:
        try:
            await self._changes.aclose()
        finally:
            self._release()


async def _changes(checks: _Checks, log: EventLog, user_id: str, cubes: list[str] | None, start: Any, follow: bool,
                   everything: bool, key_id: str | None,
                   release: Callable[[], None] | None) -> AsyncGenerator[tuple[Any, Any], None]:
    try:
        async for envelope, after in subscribe(log, cube_ids=cubes, start=start, follow=follow):
            if not everything and not await checks.may_read(user_id, envelope.event.key):
                logger.info("feed closed: access withdrawn user=%s cube=%s", user_id, envelope.event.key)
                return
            if key_id is not None and not await checks.key_active(user_id, key_id):
                logger.info("feed closed: key revoked user=%s key=%s", user_id, key_id)
                return
            yield envelope, after
    finally:
        if release is not None:
            release()
