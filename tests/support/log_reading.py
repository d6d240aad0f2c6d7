"""Test helpers that read what is on a runtime's log."""

from __future__ import annotations

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
