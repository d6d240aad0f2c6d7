"""Replay: drop one cube's projections and rebuild them from the log, identical to the incremental state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from memos.runtime import Runtime
from processors.projection import project
from schemas.codec import decode
from schemas.envelope import Position
from schemas.errors import EventDecodeError
from schemas.ops import AnyOp, DropCube
from schemas.topics import MEMORIES
from streams.log.base import partition_for
from streams.pipeline.stages import apply_planned

__all__ = ["Progress", "replay_cube"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (records read, records to read) as the replay advances."""


async def replay_cube(rt: Runtime, cube_id: str, *, progress: Progress | None = None, batch: int = 2000) -> int:
    """Rebuild ``cube_id`` in every projection from the memories topic; returns events applied.

    The live projection is paused (its lock) for the duration, so no record of the cube is applied
    out of order; the live checkpoints are left where they are (ops are applied with ``replay=True``).
    """
    key = cube_id.encode()
    partitions = await rt.log.partitions(MEMORIES)
    partition = partition_for(key, partitions)
    applied = 0
    async with rt.projection_stage.lock:
        end = (await rt.log.end_offsets(MEMORIES)).get(partition, 0)
        await apply_planned(rt.stores, [([DropCube(cube_id=cube_id)], Position(MEMORIES, partition, -1))],
                            replay=True)
        offset = 0
        while offset < end:
            records = await rt.log.read(MEMORIES, partition, offset, limit=batch)
            if not records:
                break
            planned: list[tuple[Sequence[AnyOp], Position]] = []
            for record in records:
                if record.position.offset >= end:
                    break
                if record.key != key:
                    continue
                try:
                    event = decode(record.value)
                except EventDecodeError as exc:
                    logger.warning("replay skipped poison record position=%s error=%s", record.position, exc)
                    continue
                ops = project(event)
                if ops:
                    planned.append((ops, record.position))
            offset = records[-1].position.offset + 1
            if planned:
                await apply_planned(rt.stores, planned, replay=True)
                applied += len(planned)
            if progress is not None:
                progress(min(offset, end), end)
    logger.info("replayed cube=%s topic=%s partition=%d events=%d", cube_id, MEMORIES, partition, applied)
    return applied
