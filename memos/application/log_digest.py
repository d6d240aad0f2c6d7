"""The console's digest of the memories topic: per cube, each memory's type, status and history
(log positions), predecessors, last change and model usage, folded incrementally from the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.codec import decode
from schemas.errors import EventDecodeError
from schemas.events import MemoryAdded, MemoryRetired, MemoryRevised, ModelUsage

__all__ = ["CubeDigest", "LogDigest", "MemoryDigest", "UsageRow"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRow:
    """Model calls and tokens recorded in one cube's memory events for one model."""

    cube_id: str
    model_id: str
    kind: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class MemoryDigest:
    """One memory as the digest knows it."""

    memory_type: str
    status: str = "activated"
    history: list[dict[str, Any]] = field(default_factory=list)
    predecessors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CubeDigest:
    """One cube as the digest knows it."""

    memories: dict[str, MemoryDigest] = field(default_factory=dict)
    last_change: datetime | None = None
    usage: dict[tuple[str, str], UsageRow] = field(default_factory=dict)


class LogDigest:
    """Per cube, from the memories topic: each memory's type, status and history, and model usage."""

    def __init__(self) -> None:
        self.cubes: dict[str, CubeDigest] = {}
        self.cursor: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.lock = asyncio.Lock()

    def fold_records(self, records: Sequence[Any]) -> None:
        """Decode and fold a batch of log records (run in a worker thread: decoding is CPU work)."""
        for record in records:
            try:
                self.fold(decode(record.value), record.position.partition, record.position.offset)
            except EventDecodeError as exc:
                logger.warning("console digest skipped record position=%s error=%s", record.position, exc)

    def fold(self, event: Any, partition: int, offset: int) -> None:
        """Fold one memory event; history steps keep their log position, not the text (read on demand)."""
        cube_id = getattr(event, "cube_id", None)
        if cube_id is None:
            return
        cube = self.cubes.setdefault(cube_id, CubeDigest())
        cube.last_change = max(cube.last_change or event.occurred_at, event.occurred_at)
        for u in getattr(event, "usage", None) or ():
            self._usage(cube, cube_id, u)
        step: dict[str, Any] = {"event": event.event_type, "at": event.occurred_at, "partition": partition,
                                "offset": offset}
        if isinstance(event, MemoryAdded):
            digest = cube.memories.setdefault(event.memory_id, MemoryDigest(event.memory_type))
            digest.memory_type, digest.status = event.memory_type, "activated"
            digest.history.append({**step, "extractor": event.extractor})
        elif isinstance(event, MemoryRevised):
            digest = cube.memories.setdefault(event.memory_id, MemoryDigest("LongTermMemory"))
            digest.history.append({**step, "revision": event.revision, "reason": event.reason})
        elif isinstance(event, MemoryRetired):
            digest = cube.memories.setdefault(event.memory_id, MemoryDigest("LongTermMemory"))
            digest.status = "retired"
            digest.history.append({**step, "reason": event.reason, "successor_ids": list(event.successor_ids),
                                   "requested_by": event.requested_by})
            for successor in event.successor_ids:
                cube.memories.setdefault(successor, MemoryDigest("LongTermMemory")).predecessors.append(
                    event.memory_id)

    @staticmethod
    def _usage(cube: CubeDigest, cube_id: str, usage: ModelUsage) -> None:
        row = cube.usage.setdefault((usage.model_id, usage.kind), UsageRow(cube_id, usage.model_id, usage.kind))
        row.calls += usage.attempts
        row.prompt_tokens += usage.prompt_tokens
        row.completion_tokens += usage.completion_tokens


