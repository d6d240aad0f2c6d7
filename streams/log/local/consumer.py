"""Consumers of the embedded log: fetch, wake-ups, commits; groups through streams.log.local.group."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.envelope import Position, Record
from schemas.errors import TransportError
from streams.log.base import Consumer, StartFrom, TopicPartition
from streams.log.local.group import (
    GroupView,
    commit_offsets,
    count_attempt,
    heartbeat,
    leave_group,
    sync_member,
    topic_state,
)
from streams.log.local.sqlite import Notifier, SqliteReader, SqliteWriter, map_sqlite_errors, unpack_headers

__all__ = ["LocalConsumer", "LogContext"]

logger = logging.getLogger(__name__)

_CLAIM_RETRY_S = 0.05
_IDLE_FETCH_S = 0.5
"""An idle consumer fetches again after this long without a wake-up (a safety net: appends in this
process notify at once, appends by other processes through the notifier's watcher)."""


@dataclass(frozen=True, slots=True)
class LogContext:
    """What a consumer needs from its LocalEventLog."""

    path: Path
    writer: SqliteWriter
    reader: SqliteReader
    notifier: Notifier
    session_timeout_s: float
    heartbeat_interval_s: float


@dataclass(slots=True)
class _Fetched:
    generation: int
    topology: int
    records: list[Record]
    positions: dict[TopicPartition, int]


def _fetch(
    conn: sqlite3.Connection,
    *,
    group: str | None,
    topics: Sequence[str],
    positions: Mapping[TopicPartition, int],
    order: Sequence[TopicPartition],
    max_records: int,
) -> _Fetched:
    generation = -1
    if group is not None:
        row = conn.execute("SELECT generation FROM log_groups WHERE group_id = ?", (group,)).fetchone()
        generation = -1 if row is None else int(row[0])
    topology, _, ends = topic_state(conn, topics)
    records: list[Record] = []
    moved: dict[TopicPartition, int] = {}
    for tp in order:
        start, end = positions[tp], ends.get(tp, 0)
        budget = max_records - len(records)
        if start >= end or budget <= 0:
            continue
        rows = conn.execute(
            "SELECT offset, key, value, headers, timestamp_ms FROM log_records "
            "WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ? ORDER BY offset LIMIT ?",
            (tp[0], tp[1], start, end, budget),
        ).fetchall()
        for offset, key, value, headers, ts in rows:
            position = Position(tp[0], tp[1], offset)
            records.append(Record(position, key, value, unpack_headers(headers), ts))
        # Fewer rows than asked for means the rest up to ``end`` were forgotten (deleted): skip them.
        moved[tp] = rows[-1][0] + 1 if len(rows) == budget else end
    return _Fetched(generation, topology, records, moved)


class LocalConsumer(Consumer):
    """A consumer of the embedded log; with a group it shares partitions with the group's live members.

    Partition ownership changes only inside ``poll`` (like Kafka's rebalance): a member releases a
    partition at its next poll and the new owner claims it then, starting at the group's commit. A member
    is dead when its heartbeat is older than the session timeout or, on the same host, its process is gone.
    """

    def __init__(
        self, ctx: LogContext, topics: Sequence[str], *, group_id: str | None, start_from: StartFrom
    ) -> None:
        if not topics:
            raise TransportError("a consumer needs at least one topic")
        self._ctx = ctx
        self._topics = tuple(dict.fromkeys(topics))
        self._group = group_id
        self._start_from: StartFrom = start_from
        self._member = uuid.uuid4().hex
        self._owned: frozenset[TopicPartition] = frozenset()
        self._desired: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._consumed: dict[TopicPartition, int] = {}
        self._generation = -2
        self._topology = -2
        self._next_sync = 0.0
        self._rotate = 0
        self._closed = False
        self._heartbeats: asyncio.Task[None] | None = None
        self._last_beat = 0.0
        self._quiet: tuple[int, tuple[tuple[TopicPartition, int], ...]] | None = None
        """(notifier version, positions) of the last fetch that found nothing: fetching again before a
        wake-up, a sync or ``_IDLE_FETCH_S`` would find nothing either."""
        self._quiet_until = 0.0
        self._committed: dict[TopicPartition, int] = {}
        """What this member last committed (since its last assignment change): unchanged commits are skipped."""

    def assignment(self) -> set[TopicPartition]:
        """Partitions this consumer currently owns (empty before the first poll)."""
        return set(self._owned)

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Records from owned partitions in offset order per partition; [] after ``timeout_s``."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        while True:
            if loop.time() >= self._next_sync:
                await self._sync()
            seen = self._ctx.notifier.version_of(self._topics)
            state = (seen, tuple(sorted(self._positions.items())))
            if self._quiet == state and loop.time() < self._quiet_until:
                await self._idle_wait(seen, deadline)  # nothing new since the last empty fetch
                if loop.time() >= deadline:
                    return []
                continue
            snapshot = dict(self._positions)
            order = sorted(snapshot)
            if order:
                self._rotate = (self._rotate + 1) % len(order)
                order = order[self._rotate :] + order[: self._rotate]
            with map_sqlite_errors("poll", self._ctx.path):
                fetched = await self._ctx.reader.run(
                    functools.partial(
                        _fetch,
                        group=self._group,
                        topics=self._topics,
                        positions=snapshot,
                        order=order,
                        max_records=max(1, max_records),
                    )
                )
            if fetched.generation != self._generation or fetched.topology != self._topology:
                self._next_sync = 0.0
            out: list[Record] = []
            for record in fetched.records:
                tp = (record.position.topic, record.position.partition)
                if self._positions.get(tp) == snapshot[tp]:
                    out.append(record)
            for tp, moved in fetched.positions.items():
                if self._positions.get(tp) == snapshot[tp]:
                    self._positions[tp] = moved
                    self._consumed[tp] = moved
            if out:
                self._quiet = None
                return out
            self._quiet = (seen, tuple(sorted(self._positions.items())))
            self._quiet_until = loop.time() + _IDLE_FETCH_S
            if deadline - loop.time() <= 0:
                return []
            if self._next_sync == 0.0:
                continue
            await self._idle_wait(seen, deadline)

    async def _idle_wait(self, seen: int, deadline: float) -> None:
        """Wait for a wake-up (an append), the next group sync, the idle re-fetch or ``deadline``."""
        now = asyncio.get_running_loop().time()
        until = min(deadline, self._next_sync, self._quiet_until)
        await self._ctx.notifier.wait(seen, max(until - now, 0.001), self._topics)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit next-offsets; partitions this member no longer owns are skipped (with a warning)."""
        self._check_open()
        if self._group is None:
            raise TransportError("commit needs a consumer with a group_id")
        todo = dict(self._consumed if offsets is None else offsets)
        todo = {tp: o for tp, o in todo.items() if self._committed.get(tp) != o}
        if not todo:
            return
        group, member = self._group, self._member
        with map_sqlite_errors("commit", self._ctx.path):
            skipped = await self._ctx.writer.run(lambda conn: commit_offsets(conn, group, member, todo))
        self._committed.update({tp: o for tp, o in todo.items() if tp not in set(skipped)})
        for topic, partition in skipped:
            logger.warning(
                "commit skipped, partition no longer owned group=%s topic=%s partition=%s offset=%s",
                group,
                topic,
                partition,
                todo[(topic, partition)],
            )

    async def record_attempt(self, topic: str, partition: int, offset: int) -> int:
        """Durably count an attempt at the record at ``offset`` (kept beside the group's offsets)."""
        self._check_open()
        if self._group is None:
            return 0
        group = self._group
        with map_sqlite_errors("record attempt", self._ctx.path):
            count: int = await self._ctx.writer.run(
                lambda conn: count_attempt(conn, group, topic, partition, offset))
        return count

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Next poll of that partition starts at ``offset``; TransportError when it is not assigned."""
        self._check_open()
        if self._generation == -2:
            await self._sync()
        if (topic, partition) not in self._owned:
            raise TransportError(f"partition {topic!r}/{partition} is not assigned to this consumer")
        self._positions[(topic, partition)] = max(0, offset)
        self._committed.pop((topic, partition), None)

    async def aclose(self) -> None:
        """Leave the group (its partitions go to the other members at their next poll). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
        if self._group is not None and self._generation != -2:
            group, member = self._group, self._member
            try:
                with map_sqlite_errors("leave group", self._ctx.path):
                    await self._ctx.writer.run(lambda conn: leave_group(conn, group, member))
            except TransportError as exc:
                logger.warning("could not leave group=%s member=%s error=%s", group, member, exc)
            self._ctx.notifier.notify()
        self._owned = frozenset()
        self._positions.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("consumer is closed")

    async def _sync(self) -> None:
        loop = asyncio.get_running_loop()
        if self._group is None:
            with map_sqlite_errors("poll", self._ctx.path):
                topology, counts, ends = await self._ctx.reader.run(
                    lambda conn: topic_state(conn, self._topics)
                )
            owned = frozenset((t, p) for t, n in counts.items() for p in range(n))
            view = GroupView(-1, topology, False, owned, owned, {}, ends)
        else:
            group, member, topics, timeout = (
                self._group,
                self._member,
                self._topics,
                self._ctx.session_timeout_s,
            )
            with map_sqlite_errors("group sync", self._ctx.path):
                view = await self._ctx.writer.run(
                    lambda conn: sync_member(
                        conn, group=group, member=member, topics=topics, session_timeout_s=timeout
                    )
                )
            if self._heartbeats is None:
                self._heartbeats = asyncio.create_task(
                    self._heartbeat_loop(), name=f"memos-log-heartbeat:{group}"
                )
        if view.rejoined and self._generation != -2:
            logger.warning("group member rejoined after expiry group=%s member=%s", self._group, self._member)
            self._positions.clear()
            self._consumed.clear()
        for tp in set(self._positions) - view.owned:
            self._positions.pop(tp, None)
            self._consumed.pop(tp, None)
        for tp in sorted(view.owned - set(self._positions)):
            if tp in view.committed:
                self._positions[tp] = view.committed[tp]
            elif self._start_from == "latest":
                self._positions[tp] = view.ends.get(tp, 0)
            else:
                self._positions[tp] = 0
        self._last_beat = loop.time()
        if view.owned != self._owned or view.rejoined:
            self._committed.clear()
        if view.owned != self._owned:
            logger.info(
                "assignment group=%s member=%s generation=%s partitions=%s",
                self._group,
                self._member,
                view.generation,
                sorted(view.owned),
            )
        self._owned, self._desired = view.owned, view.desired
        self._generation, self._topology = view.generation, view.topology
        pending = self._group is not None and view.owned != view.desired
        interval = _CLAIM_RETRY_S if pending else self._ctx.heartbeat_interval_s
        self._next_sync = loop.time() + (interval if self._group is not None else 3600.0)

    async def _heartbeat_loop(self) -> None:
        group, member = self._group, self._member
        assert group is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ctx.heartbeat_interval_s)
            if loop.time() - self._last_beat < self._ctx.heartbeat_interval_s / 2:
                continue  # a group sync (which heartbeats too) ran since the last beat
            self._last_beat = loop.time()
            try:
                with map_sqlite_errors("heartbeat", self._ctx.path):
                    await self._ctx.writer.run(lambda conn: heartbeat(conn, group, member))
            except TransportError as exc:
                if self._ctx.writer.closed:
                    return
                logger.warning("heartbeat failed group=%s member=%s error=%s", group, member, exc)
