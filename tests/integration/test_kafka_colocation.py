"""Two workers on Kafka split a group's partitions, and each holds the same partition numbers in every group.

A worker's group consumers carry its worker id in their client id, so the member ids sort by worker and
the round-robin assignor hands worker ``i`` the same partition numbers of the conversations topic (its
deriver) and of the memories topic (its projector): the cubes a worker derives are the ones it projects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest

from streams.log.base import Consumer, TopicPartition
from streams.log.kafka.log import KafkaEventLog
from tests.engines import engine_url

pytestmark = pytest.mark.engine("kafka")

PARTITIONS = 4


async def _settle(consumers: Sequence[Consumer], everything: set[TopicPartition]) -> None:
    """Poll every consumer until, together, they hold each partition exactly once and each holds some."""
    deadline = time.monotonic() + 60
    while True:
        await asyncio.gather(*(c.poll(timeout_s=0.2) for c in consumers))
        held = [c.assignment() for c in consumers]
        if all(held) and sum(len(h) for h in held) == len(everything) and set().union(*held) == everything:
            return
        assert time.monotonic() < deadline, f"assignments never settled: {held}"


async def test_two_workers_split_groups_and_hold_the_same_partition_numbers_in_each() -> None:
    servers = engine_url("kafka").removeprefix("kafka://")
    run = uuid.uuid4().hex[:8]
    conversations, memories, registry = (f"test.coloc-{run}.{name}" for name in ("a", "b", "c"))
    logs = [KafkaEventLog(servers, partitions=PARTITIONS, worker_id=f"coloc-{run}-w{i}") for i in range(2)]
    consumers: list[Consumer] = []
    try:
        for log in logs:
            await log.start()
        for topic in (conversations, memories, registry):
            await logs[0].create_topic(topic, partitions=PARTITIONS)
        derivers = [log.consumer([conversations], group_id=f"coloc-{run}-deriver") for log in logs]
        projectors = [log.consumer([memories, registry], group_id=f"coloc-{run}-projector") for log in logs]
        consumers = [*derivers, *projectors]
        await _settle(derivers, {(conversations, p) for p in range(PARTITIONS)})
        await _settle(projectors, {(t, p) for t in (memories, registry) for p in range(PARTITIONS)})
        for deriver, projector in zip(derivers, projectors, strict=True):
            derived = {p for _, p in deriver.assignment()}
            projected = {p for t, p in projector.assignment() if t == memories}
            assert len(derived) == PARTITIONS // 2
            assert derived == projected, f"deriver holds {derived}, projector holds {projected}"
    finally:
        for consumer in consumers:
            await consumer.aclose()
        for log in logs:
            await log.aclose()
