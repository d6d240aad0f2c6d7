"""Operator use case ``status``: end offsets, lag per stage (and stages behind), the derivation backlog, tasks, cubes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memos.application.behind import BehindWatch, behind_of
from memos.application.operations import PROCESSOR_GROUPS, Lag, OperationsUseCases
from memos.application.shared import shared
from schemas.envelope import Position
from schemas.topics import ALL_TOPICS, REGISTRY, TASKS

__all__ = ["StatusUseCases", "SystemStatus"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SystemStatus:
    """What ``memos status`` shows: one snapshot of the log and the control projection."""

    log: str
    """The event log's URL."""
    topics: dict[str, dict[int, int]]
    """End offset per partition, per topic (every topic of the system, in ``ALL_TOPICS`` order)."""
    lag: dict[str, dict[str, int]]
    """Records not yet committed, per stage (its consumer group without ``log.group_prefix``) and topic;
    a stage that never committed on a topic it reads counts every record there (``lag_of``)."""
    waited: dict[str, dict[str, float]]
    """Seconds the oldest of those records has waited on the log, per stage and topic it is behind on."""
    behind: list[str]
    """Stages whose oldest uncommitted record has waited over ``server.behind_after_s``, one line each."""
    backlog: int
    """Conversation records derivation has not passed yet (a sync add is refused at ``door.max_backlog``)."""
    tasks: dict[str, int]
    """Tasks per status."""
    cubes: int
    """Number of cubes."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``memos status --json`` (partition numbers become string keys)."""
        return {
            "log": self.log,
            "topics": {t: {str(p): o for p, o in ends.items()} for t, ends in self.topics.items()},
            "lag": {g: dict(topics) for g, topics in self.lag.items()},
            "waited_s": {g: dict(topics) for g, topics in self.waited.items()},
            "behind": list(self.behind),
            "backlog": self.backlog,
            "tasks": dict(self.tasks),
            "cubes": self.cubes,
        }


class StatusUseCases(OperationsUseCases):
    """The status use case; mixed into the memory service (read-only, operators)."""

    def failed_stages(self) -> list[str]:
        """Stages hosted in this process that stopped on an error (each logged why), with their errors."""
        return self.rt.failed_stages()

    async def stage_failure(self) -> list[str]:
        """Until a stage hosted in this process stops on an error: ``failed_stages``."""
        return await self.rt.stage_failure()

    def stages_behind(self) -> list[str]:
        """Stages, wherever they run, whose oldest uncommitted record has waited over ``server.behind_after_s``:
        hung, or not keeping up (/healthz). The answer of a read of the log started at most every 10 s and
        shared by every caller: asking never waits for the log, and it is empty until the first read ends."""
        if self.rt.settings.server.behind_after_s <= 0:
            return []
        return shared(self.rt, BehindWatch, BehindWatch).behind(self._behind_now)

    def _deployed(self, stages: Sequence[str]) -> list[str]:
        """``stages`` less those this deployment does not run (``runs``)."""
        return [s for s in stages if self.runs(s)]

    async def _behind_now(self) -> list[str]:
        return self._named_behind(await self.lag_of(self._deployed(PROCESSOR_GROUPS), ages=True))

    def _named_behind(self, lag: Mapping[tuple[str, str], Lag]) -> list[str]:
        """``behind_of`` the deployed stages in ``lag`` at ``server.behind_after_s`` (none where that is 0)."""
        after = self.rt.settings.server.behind_after_s
        deployed = set(self._deployed([group for group, _ in lag]))
        return behind_of({k: v for k, v in lag.items() if k[0] in deployed}, after) if after > 0 else []

    async def _control_to(self, topics: dict[str, dict[int, int]]) -> None:
        """Bring the control projection up to these end offsets before counting tasks and cubes (a CLI process
        on the embedded log applies them itself); a control stage that is behind elsewhere shows as lag."""
        ends = [Position(topic, partition, end - 1)
                for topic in (REGISTRY, TASKS) for partition, end in topics[topic].items() if end > 0]
        try:
            await self.rt.settle_control(ends, timeout_s=2.0)
        except TimeoutError:
            logger.info("status: the control projection is behind the log; counts may lag")

    async def system_status(self, stages: Sequence[str] = PROCESSOR_GROUPS) -> SystemStatus:
        """Snapshot of end offsets, lag of ``stages``, the derivation backlog, task counts and cubes."""
        topics: dict[str, dict[int, int]] = {}
        for topic in ALL_TOPICS:
            ends = await self.rt.log.end_offsets(topic)
            topics[topic] = dict(sorted(ends.items()))
        await self._control_to(topics)
        lag: dict[str, dict[str, int]] = {}
        waited: dict[str, dict[str, float]] = {}
        found = await self.lag_of(stages, ages=True)
        for (group, topic), it in found.items():
            lag.setdefault(group, {})[topic] = it.records
            if it.waited_s is not None:
                waited.setdefault(group, {})[topic] = round(it.waited_s, 3)
        behind = self._named_behind(found)
        return SystemStatus(
            log=self.rt.settings.log_url(),
            topics=topics,
            lag=lag,
            waited=waited,
            behind=behind,
            backlog=await self.rt.derivation_backlog(),
            tasks=await self.rt.control.task_counts(),
            cubes=len(await self.rt.control.all_cubes()),
        )
