"""Forgetting what one user wrote into a cube that others keep: the user's records leave the log, then the
cube's projections are rebuilt from what remains (replay), so nothing the user wrote stays searchable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from memory_store.base import Projection
from schemas.codec import decode
from schemas.envelope import Position
from schemas.errors import EventDecodeError
from schemas.events import (
    ConversationRecorded,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    RelationAdded,
    TaskStatusChanged,
    TaskSubmitted,
)
from schemas.topics import CONVERSATIONS, MEMORIES, TASKS
from streams.log.base import EventLog, TopicPartition, partition_for
from streams.replay import replay_cube

__all__ = ["DERIVED_FROM", "derivation_fence", "forget_user_writes", "user_records"]

logger = logging.getLogger(__name__)


DERIVED_FROM: tuple[tuple[str, tuple[str, ...]], ...] = (
    (CONVERSATIONS, ("deriver", "deriver-large", "refiner", "refiner-large")),
    (TASKS, ("scheduler",)),
)
"""The cube-keyed topics that stages derive memory events from, and those stages (by name)."""

WaitFor = Callable[[str, Mapping[TopicPartition, int], float], Awaitable[None]]
"""Wait until a stage (by name) committed past the targets, for at most the given seconds (TimeoutError)."""


async def derivation_fence(log: EventLog, cube_id: str, *, group: Callable[[str], str], wait_for: WaitFor,
                           timeout_s: float, batch: int = 2000) -> None:
    """Return once every stage that derives from a cube's records (``DERIVED_FROM``) has committed past the
    last of them on the log, so nothing derived from them can still be published.
    What those stages publish for the cube meanwhile (a task's follow-up task) is waited for too: the fence
    reads again until a pass finds nothing new. ``group`` names a stage's consumer group. TimeoutError
    (naming the stage) after ``timeout_s`` in all.

    Only the cube's partition is read, from where the furthest-behind stage has committed to the end: records
    before that are derived already, and other cubes' records are never waited for past the cube's last one.
    """
    key = cube_id.encode()
    deadline = time.monotonic() + timeout_s
    passed: dict[str, int] = {}
    while True:
        found = False
        for topic, stages in DERIVED_FROM:
            partition = partition_for(key, await log.partitions(topic))
            committed = {s: (await log.committed(group(s), topic)).get(partition, 0) for s in stages}
            last = await _last_of(log, topic, partition, key, min(committed.values()), batch)
            if last <= passed.get(topic, -1):
                continue
            found, passed[topic] = True, last
            for stage, at in committed.items():
                if at <= last:
                    try:
                        await wait_for(stage, {(topic, partition): last + 1}, max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        raise TimeoutError(f"stage {stage!r} has not derived cube {cube_id!r}'s records on {topic} "
                                           f"up to offset {last} within {timeout_s:g}s") from None
        if not found:
            return


async def _last_of(log: EventLog, topic: str, partition: int, key: bytes, offset: int, batch: int) -> int:
    """The offset of the last record keyed ``key`` in a partition from ``offset`` to its end (-1: none)."""
    end = (await log.end_offsets(topic)).get(partition, 0)
    last = -1
    while offset < end:
        records = await log.read(topic, partition, offset, limit=batch)
        if not records:
            break
        for record in records:
            if record.key == key:
                last = record.position.offset
        offset = records[-1].position.offset + 1
    return last


async def user_records(log: EventLog, cube_id: str, user_id: str, *, batch: int = 2000) -> dict[str, list[Position]]:
    """Positions, per topic, of what ``user_id`` wrote into ``cube_id``: their conversations, the memories
    derived from them (with their revisions, retirements and edges), their submitted tasks and the
    status records of those tasks and of their adds. Revisions that merged the user's words into someone
    else's memory go too (their origin is the user's conversation)."""
    key = cube_id.encode()
    events: set[str] = set()
    tasks: set[str] = set()
    memories: set[str] = set()
    found: dict[str, list[Position]] = {CONVERSATIONS: [], MEMORIES: [], TASKS: []}
    for topic in (CONVERSATIONS, TASKS, MEMORIES):  # conversations first: they name the tasks and origins
        partition = partition_for(key, await log.partitions(topic))
        end = (await log.end_offsets(topic)).get(partition, 0)
        offset = 0
        while offset < end:
            records = await log.read(topic, partition, offset, limit=batch)
            if not records:
                break
            for record in records:
                if record.key != key:
                    continue
                try:
                    event = decode(record.value)
                except EventDecodeError:
                    continue
                mine = False
                match event:
                    case ConversationRecorded():
                        mine = event.user_id == user_id
                        if mine:
                            events.add(str(event.event_id))
                            tasks.add(event.task_id)
                    case TaskSubmitted():
                        mine = event.user_id == user_id
                        if mine:
                            tasks.add(event.task_id)
                    case TaskStatusChanged():
                        mine = event.task_id in tasks
                    case MemoryAdded():
                        mine = event.user_id == user_id
                        if mine:
                            memories.add(event.memory_id)
                    case MemoryRevised():
                        mine = event.memory_id in memories or str(event.origin_event_id) in events
                    case MemoryRetired():
                        mine = event.memory_id in memories
                    case RelationAdded():
                        mine = event.source_id in memories or event.target_id in memories
                if mine:
                    found[topic].append(record.position)
            offset = records[-1].position.offset + 1
    return found


async def forget_user_writes(log: EventLog, stores: Sequence[Projection], live_lock: asyncio.Lock, user_id: str,
                             cube_id: str) -> int:
    """Delete what ``user_id`` wrote into ``cube_id`` from the log, then rebuild the cube's projections from
    the rest; returns the records removed. The live projection is paused meanwhile (``live_lock``)."""
    async with live_lock:
        found = await user_records(log, cube_id, user_id)
        removed = 0
        for topic, positions in found.items():
            if positions:
                removed += await log.forget_positions(topic, positions)
    if removed:
        await replay_cube(log, stores, live_lock, cube_id)
    logger.info("user writes forgotten user=%s cube=%s records=%d", user_id, cube_id, removed)
    return removed
