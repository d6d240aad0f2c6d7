"""Per-user bound on work waiting for derivation: adds on the log that their stages have not passed yet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from memos.application.errors import BacklogFull
from memos.application.ports import Platform
from memos.application.shared import shared

__all__ = ["PendingWork", "Record", "UserBacklogFull", "Waiting", "pending_work_for"]


class UserBacklogFull(BacklogFull):
    """A user has ``door.max_pending_per_user`` records, or ``door.max_pending_bytes_per_user`` bytes of adds,
    waiting for derivation: HTTP 429, retry later."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """One record a user put on the log, waiting until every stage of ``groups`` has committed past it."""

    topic: str
    partition: int
    end: int
    """The record's offset + 1: what a stage's committed offset must reach."""
    groups: tuple[str, ...]
    """Stage names (without the deployment's group prefix) that derive from the record."""
    size: int = 0
    """What the record costs derivation, in bytes of its messages."""


Record = Callable[[Sequence[Waiting]], None]
"""Called by an admitted writer with what it put on the log."""


class PendingWork:
    """Counts each user's records that derivation has not passed, and refuses writes past the bound.

    Derivation reads a partition in order, so one tenant's flood of async adds delays every cube behind it
    in its partitions (their derivation, and forgets, which wait for it); this bounds what one user may have
    waiting. A write reserves its records before it is checked against the bound and records their positions
    once they are on the log, so concurrent writes of one user cannot all pass the same count. Passed records
    are dropped when a user reaches the bound, from the stages' committed offsets (read at most every
    ``refresh_s``, one reading shared by every caller). Per process: records written through another API
    process are not counted here, and the count starts afresh on restart.
    """

    def __init__(self, platform: Platform, *, per_user: int, retry_after_s: float, refresh_s: float = 0.25,
                 bytes_per_user: int = 0) -> None:
        self.rt = platform
        self.per_user = per_user
        self.bytes_per_user = bytes_per_user
        """Bytes of messages one user may have waiting (0: no limit): adds of 60 KB cost derivation 60 times
        what adds of 1 KB do, so a count alone let one user queue half an hour of work ahead of others."""
        self.retry_after_s = retry_after_s
        self.refresh_s = refresh_s
        self._waiting: defaultdict[str, list[Waiting]] = defaultdict(list)
        self._reserved: defaultdict[str, int] = defaultdict(int)
        self._reserved_bytes: defaultdict[str, int] = defaultdict(int)
        self._committed: dict[tuple[str, str], dict[int, int]] = {}
        self._read_at = -float("inf")
        self._reading: asyncio.Future[None] | None = None

    def count(self, user_id: str) -> int:
        """Records of ``user_id`` counted as waiting (or reserved by writes under way), as last pruned."""
        return len(self._waiting.get(user_id, ())) + self._reserved.get(user_id, 0)

    def held_bytes(self, user_id: str) -> int:
        """Bytes of ``user_id``'s adds counted as waiting (or reserved by writes under way), as last pruned."""
        return sum(w.size for w in self._waiting.get(user_id, ())) + self._reserved_bytes.get(user_id, 0)

    def _over(self, user_id: str, records: int, size: int = 0) -> bool:
        count = self.count(user_id)
        if count <= 0:
            return False
        return (0 < self.per_user < count + records) or (0 < self.bytes_per_user < self.held_bytes(user_id) + size)

    @asynccontextmanager
    async def admit(self, user_id: str, records: int, *, size: int = 0,
                    wait_s: float | None = None) -> AsyncIterator[Record]:
        """Admit a write of ``records`` log records (``size`` bytes of messages in all) by ``user_id``; the body
        calls the yielded function with their positions once they are on the log.

        Past the bound: UserBacklogFull at once (``wait_s`` None: remote callers), or once ``wait_s`` seconds
        have passed without derivation making room (in-process callers, which are held back rather than
        refused). A write larger than the bound is admitted when the user has nothing waiting, so it is never
        refused for good."""
        if self.per_user <= 0 and self.bytes_per_user <= 0:
            yield _ignore
            return
        near_count = self.per_user > 0 and self.count(user_id) + records > self.per_user // 2
        near_bytes = self.bytes_per_user > 0 and self.held_bytes(user_id) + size > self.bytes_per_user // 2
        if near_count or near_bytes:  # a user far below the bounds is not read for
            await self._prune(user_id)
            if self._over(user_id, records, size):
                await self._make_room(user_id, records, size, wait_s)
        self._reserved[user_id] += records
        self._reserved_bytes[user_id] += size

        def record(items: Sequence[Waiting]) -> None:
            if items:
                self._waiting[user_id].extend(items)

        try:
            yield record
        finally:
            self._reserved[user_id] -= records
            self._reserved_bytes[user_id] -= size
            if not self._reserved_bytes[user_id]:
                del self._reserved_bytes[user_id]
            if not self._reserved[user_id]:
                del self._reserved[user_id]
                if not self._waiting.get(user_id, True):
                    del self._waiting[user_id]

    async def _make_room(self, user_id: str, records: int, size: int, wait_s: float | None) -> None:
        """Return once the write fits, waiting on the user's oldest record for at most ``wait_s``; else refuse."""
        deadline = time.monotonic() + (wait_s or 0.0)
        while self._over(user_id, records, size):
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserBacklogFull(
                    f"user {user_id!r} has {self.count(user_id)} adds ({self.held_bytes(user_id)} bytes) waiting for "
                    f"derivation (limits {self.per_user}, door.max_pending_per_user, and {self.bytes_per_user} "
                    f"bytes, door.max_pending_bytes_per_user); retry later", retry_after=self.retry_after_s)
            waiting = self._waiting.get(user_id)
            if waiting:  # derivation passing the oldest makes room
                oldest = waiting[0]
                with contextlib.suppress(TimeoutError):
                    for group in oldest.groups:
                        await self.rt.wait_for(group, {(oldest.topic, oldest.partition): oldest.end},
                                               timeout_s=max(left, 0.001))
            else:  # only writes under way hold the count: their records are on the log in a moment
                await asyncio.sleep(min(left, self.refresh_s))
            await self._prune(user_id, fresh=True)

    async def _prune(self, user_id: str, *, fresh: bool = False) -> None:
        """Drop the user's records every stage of theirs has passed (offsets read afresh if older than
        ``refresh_s``, or when ``fresh``)."""
        waiting = self._waiting.get(user_id)
        if not waiting:
            return
        needed = {(group, w.topic) for w in waiting for group in w.groups}
        if fresh or time.monotonic() - self._read_at >= self.refresh_s or not needed <= self._committed.keys():
            reading = self._reading
            if reading is None or reading.done():
                reading = self._reading = asyncio.ensure_future(self._read(needed | self._committed.keys()))
            await asyncio.shield(reading)
        waiting[:] = [w for w in waiting if self._ahead(w)]

    def _ahead(self, w: Waiting) -> bool:
        """Whether a stage of ``w`` had not passed it at the last reading."""
        return any(self._committed.get((g, w.topic), {}).get(w.partition, 0) < w.end for g in w.groups)

    async def _read(self, pairs: set[tuple[str, str]]) -> None:
        """Read the stages' committed offsets, then drop every user's passed records (users who stopped
        writing keep none for long: each reading sweeps them all)."""
        started = time.monotonic()
        groups = sorted(pairs)
        offsets = await asyncio.gather(*(self.rt.log.committed(self.rt.group(g), topic) for g, topic in groups))
        self._committed = dict(zip(groups, offsets, strict=True))
        self._read_at = started
        for user_id, waiting in list(self._waiting.items()):
            waiting[:] = [w for w in waiting if self._ahead(w)]
            if not waiting and user_id not in self._reserved:
                del self._waiting[user_id]


def _ignore(_: Sequence[Waiting]) -> None:
    return None


def pending_work_for(platform: Platform) -> PendingWork:
    """The one count of ``platform`` (a runtime): every front end over it shares it."""
    limits = platform.door_limits
    return shared(platform, PendingWork, lambda: PendingWork(
        platform, per_user=limits.max_pending_per_user, retry_after_s=limits.backlog_retry_after_s,
        bytes_per_user=limits.max_pending_bytes_per_user))
