"""Memory-change feeds: ordered, resumable subscriptions to memory events of some or all cubes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from schemas.codec import decode, decode_raw
from schemas.envelope import Envelope, Record
from schemas.errors import EventDecodeError, ValidationFailed
from schemas.events import AnyEvent
from schemas.topics import MEMORIES
from streams.log.base import EventLog, partition_for

__all__ = ["MAX_OFFSET", "Cursor", "format_cursor", "parse_cursor", "parse_offset", "records", "recorded_usage",
           "subscribe", "usage_feed"]

logger = logging.getLogger(__name__)

Cursor = dict[int, int]
"""Per partition, the offset of the next event to deliver."""


def format_cursor(cursor: Cursor) -> str:
    """A cursor as text, e.g. '0:12,3:40' (partition:next offset); used as SSE Last-Event-ID."""
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


_NUMBER = re.compile(r"[0-9]{1,19}")
MAX_OFFSET = 2**63 - 1
"""The largest log offset (Kafka's and SQLite's signed 64-bit integers)."""


def parse_offset(text: str) -> int | None:
    """A partition or offset written in ASCII digits, at most ``MAX_OFFSET``; None for anything else."""
    if _NUMBER.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= MAX_OFFSET else None


def parse_cursor(text: str) -> Cursor:
    """Parse '0:12,3:40'; ValidationFailed on malformed text (or a number past ``MAX_OFFSET``)."""
    cursor: Cursor = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition_text, sep, offset_text = part.partition(":")
        partition, offset = parse_offset(partition_text), parse_offset(offset_text)
        if not sep or partition is None or offset is None:
            raise ValidationFailed(
                f"malformed cursor part {part[:64]!r}; expected 'partition:offset' (ASCII digits, at most "
                f"{MAX_OFFSET})", field="cursor",
            )
        cursor[partition] = offset
    return cursor


async def subscribe(
    log: EventLog,
    *,
    cube_ids: Sequence[str] | None = None,
    start: Literal["beginning", "now"] | int | Cursor = "beginning",
    topic: str = MEMORIES,
    follow: bool = True,
    poll_interval_s: float = 0.1,
) -> AsyncIterator[tuple[Envelope[AnyEvent], Cursor]]:
    """Yield (envelope, cursor after it) for memory events, in log order per partition.

    ``start``: 'beginning', 'now', an offset applied to every partition read, or a cursor from an
    earlier subscription (exact resume). With cube ids only their partitions are read and events of
    other cubes are filtered out. With ``follow=False`` the iterator ends at the current end.
    """
    async for record, cursor in records(log, cube_ids=cube_ids, start=start, topic=topic, follow=follow,
                                        poll_interval_s=poll_interval_s):  # fmt: skip
        try:
            event = decode(record.value)
        except EventDecodeError as exc:
            logger.warning("feed skipped poison record position=%s error=%s", record.position, exc)
            continue
        yield Envelope(record.position, event, record.headers), cursor


async def records(
    log: EventLog,
    *,
    cube_ids: Sequence[str] | None = None,
    start: Literal["beginning", "now"] | int | Cursor = "beginning",
    topic: str = MEMORIES,
    follow: bool = True,
    poll_interval_s: float = 0.1,
) -> AsyncIterator[tuple[Record, Cursor]]:
    """``subscribe``'s records as they are on the log (not decoded), with the cursor after each."""
    partitions = await log.partitions(topic)
    keys = {c.encode() for c in cube_ids} if cube_ids else None
    wanted = sorted({partition_for(k, partitions) for k in keys}) if keys else list(range(partitions))
    ends = await log.end_offsets(topic)
    cursor: Cursor = {}
    for p in wanted:
        if start == "beginning":
            cursor[p] = 0
        elif start == "now":
            cursor[p] = ends.get(p, 0)
        elif isinstance(start, int):
            cursor[p] = start
        else:
            cursor[p] = start.get(p, 0)
    while True:
        delivered = False
        drained: set[int] = set()
        for p in wanted:
            batch = await log.read(topic, p, cursor[p], limit=500)
            if not batch:
                drained.add(p)
            for record in batch:
                cursor[p] = record.position.offset + 1
                if keys is not None and record.key not in keys:
                    continue
                delivered = True
                yield record, dict(cursor)
        if not delivered:
            if not follow:
                ends = await log.end_offsets(topic)
                # a drained partition may still be short of its end: forgotten records leave gaps
                if all(p in drained or cursor[p] >= ends.get(p, 0) for p in wanted):
                    return
                continue
            await asyncio.sleep(poll_interval_s)


def recorded_usage(payload: bytes) -> list[dict[str, Any]]:
    """The model usage a memory event records (``ModelUsage`` fields as a dict each); [] for none or poison.

    Events of the current schema are read without building the event (``decode_raw``: no validation, no
    float conversion of the embedding), which is what lets a server count tokens of every memory event
    without spending its event loop on decoding them; older schemas go through ``decode``.
    """
    raw = decode_raw(payload)
    if raw is not None:
        usage = raw[1].get("usage")
        return [dict(u) for u in usage if isinstance(u, dict)] if isinstance(usage, list) else []
    try:
        event = decode(payload)
    except EventDecodeError:
        return []
    return [u.model_dump() for u in getattr(event, "usage", None) or []]


async def usage_feed(log: EventLog, *, poll_interval_s: float = 1.0) -> AsyncIterator[list[dict[str, Any]]]:
    """The model usage of every memory event from now on, one list per event that records any."""
    async for record, _ in records(log, start="now", topic=MEMORIES, poll_interval_s=poll_interval_s):
        usage = recorded_usage(record.value)
        if usage:
            yield usage
