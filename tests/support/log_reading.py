"""Test helpers that read what is on a runtime's log, and commit offsets for a group."""

from __future__ import annotations

import time
from typing import Any

from schemas.codec import decode
from schemas.events import ConversationRecorded
from schemas.topics import CONVERSATIONS


async def adds_on_log(rt: Any) -> list[tuple[tuple[int, int], str]]:
    """((partition, offset), cube) of every add on the log (the first 100 records of each partition)."""
    out = []
    for partition in await rt.log.end_offsets(CONVERSATIONS):
        for record in await rt.log.read(CONVERSATIONS, partition, 0, limit=100):
            event = decode(record.value)
            if isinstance(event, ConversationRecorded):
                out.append(((partition, record.position.offset), event.cube_id))
    return out


async def commit_as(rt: Any, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` through a member of that group (once it holds every partition)."""
    consumer = rt.log.consumer([topic], group_id=group)
    try:
        deadline = time.monotonic() + 30
        while consumer.assignment() != {(topic, p) for p in offsets}:
            assert time.monotonic() < deadline, f"never got every partition of {topic!r}: {consumer.assignment()}"
            await consumer.poll(timeout_s=0.2)
        await consumer.commit({(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.aclose()
