"""Operator use cases: processor lag per topic (records, and how long the oldest has waited), and model usage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from memos.application.ports import Platform
from schemas.topics import ALL_TOPICS, STAGE_READS

__all__ = ["Lag", "OperationsUseCases", "PROCESSOR_GROUPS"]

logger = logging.getLogger(__name__)

PROCESSOR_GROUPS = tuple(STAGE_READS)
"""Consumer groups of the stages."""


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a stage (consumer group) is behind on one topic."""

    records: int
    """Records on the log it has not committed yet (all partitions)."""
    waited_s: float | None = None
    """How long the oldest of them has been on the log, in seconds (the longest over partitions); None when
    nothing waits or the ages were not asked for."""


class OperationsUseCases:
    """Read-only views for operators (metrics, status); mixed into the memory service."""

    rt: Platform

    def runs(self, stage: str) -> bool:
        """Whether this deployment runs ``stage``: the KV warmer only where KV caches are on (its group may still
        hold commits of an earlier run)."""
        return stage != "kv-warmer" or self.rt.settings.kv.enabled

    async def processor_lag(self, groups: Sequence[str] = PROCESSOR_GROUPS) -> dict[tuple[str, str], int]:
        """Records each group has not committed yet, per (group, topic) it consumes (groups are named
        without the deployment's ``log.group_prefix``, which is added to read their commits)."""
        return {key: lag.records for key, lag in (await self.lag_of(groups)).items()}

    async def lag_of(self, groups: Sequence[str] = PROCESSOR_GROUPS, *, ages: bool = False,
                     now_ms: int | None = None) -> dict[tuple[str, str], Lag]:
        """``processor_lag`` with, where ``ages``, how long each group's oldest uncommitted record has waited:
        its append time read off the log (one record per partition that is behind) against ``now_ms`` (the
        platform's clock). A stage that never committed on a topic it reads (``schemas.topics.STAGE_READS``) has
        consumed none of it: every record there waits for it, so a stage deployed but dead from its start shows
        (a stage this deployment does not run, ``runs``, and a topic it does not read are left out)."""
        log: Any = self.rt.log
        prefix = self.rt.settings.log.group_prefix
        now = self.rt.now().timestamp() * 1000 if now_ms is None else now_ms
        lag: dict[tuple[str, str], Lag] = {}
        appended: dict[tuple[str, int, int], int | None] = {}  # groups at the same offset read it once
        for topic in ALL_TOPICS:
            ends = await log.end_offsets(topic)
            for group in groups:
                committed = await log.committed(f"{prefix}{group}", topic)
                if not committed and (topic not in STAGE_READS.get(group, ()) or not self.runs(group)):
                    continue
                behind = {p: committed.get(p, 0) for p, end in ends.items() if end > committed.get(p, 0)}
                waited: float | None = None
                for partition, offset in behind.items() if ages else ():
                    if (topic, partition, offset) not in appended:
                        oldest = await log.read(topic, partition, offset, limit=1)
                        appended[(topic, partition, offset)] = oldest[0].timestamp_ms if oldest else None
                    if (at := appended[(topic, partition, offset)]) is not None:
                        age = max(0.0, (now - at) / 1000)
                        waited = age if waited is None else max(waited, age)
                records = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
                lag[(group, topic)] = Lag(records, waited)
        return lag

    async def model_usage(self, *, poll_interval_s: float = 1.0) -> AsyncIterator[list[dict[str, Any]]]:
        """The model usage recorded by every memory event from now on, for operators (metrics count tokens)."""
        from streams.feed import usage_feed

        async for usage in usage_feed(self.rt.log, poll_interval_s=poll_interval_s):
            yield usage
