"""Operator use cases: processor lag per topic, derivation backlog, and the raw memory-event stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from memos.application.ports import Platform
from schemas.topics import ALL_TOPICS

__all__ = ["OperationsUseCases", "PROCESSOR_GROUPS"]

logger = logging.getLogger(__name__)

PROCESSOR_GROUPS = ("deriver", "deriver-large", "refiner", "refiner-large", "projector", "control", "scheduler",
                    "kv-warmer")
"""Consumer groups of the stages."""


class OperationsUseCases:
    """Read-only views for operators (metrics, status); mixed into the memory service."""

    rt: Platform

    async def processor_lag(self, groups: Sequence[str] = PROCESSOR_GROUPS) -> dict[tuple[str, str], int]:
        """Records each group has not committed yet, per (group, topic) it consumes (groups are named
        without the deployment's ``log.group_prefix``, which is added to read their commits)."""
        log: Any = self.rt.log
        prefix = self.rt.settings.log.group_prefix
        lag: dict[tuple[str, str], int] = {}
        for topic in ALL_TOPICS:
            ends = await log.end_offsets(topic)
            for group in groups:
                committed = await log.committed(f"{prefix}{group}", topic)
                if committed:
                    lag[(group, topic)] = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
        return lag

    async def model_usage(self, *, poll_interval_s: float = 1.0) -> AsyncIterator[list[dict[str, Any]]]:
        """The model usage recorded by every memory event from now on, for operators (metrics count tokens)."""
        from streams.feed import usage_feed

        async for usage in usage_feed(self.rt.log, poll_interval_s=poll_interval_s):
            yield usage
