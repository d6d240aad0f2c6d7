"""An idle Kafka consumer does not spin: empty fetches are paced even on a broker that answers them at once.

noida-db (the test broker) answers a fetch that finds nothing straight away instead of holding it for
``fetch_max_wait_ms``; unpaced, aiokafka's fetcher then asks ~3,000 times a second and an idle worker burns
most of a core. These tests count the fetch requests an idle group consumer sends and check that a record
appended while it idles still arrives; the last one checks that only empty fetches wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams.log.base import OutgoingRecord
from streams.log.kafka.consumer import pace_empty_fetches
from streams.log.kafka.log import KafkaEventLog
from tests.engines import engine_url

pytestmark = pytest.mark.engine("kafka")

WAIT_MS = 50


@pytest.fixture
async def log() -> AsyncIterator[KafkaEventLog]:
    servers = engine_url("kafka").removeprefix("kafka://")
    async with KafkaEventLog(servers, partitions=2, empty_fetch_wait_ms=WAIT_MS) as kafka:
        yield kafka


def _count_fetches(consumer: Any) -> list[float]:
    """Times of the fetch requests the consumer's aiokafka client sends from now on."""
    client = consumer._consumer._client
    send = client.send
    sent: list[float] = []

    async def counting(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("FetchRequest"):
            sent.append(time.monotonic())
        return await send(node_id, request, *args, **kwargs)

    client.send = counting
    return sent


async def _assigned(consumer: Any, topic: str, partitions: int) -> None:
    deadline = time.monotonic() + 30
    while consumer.assignment() != {(topic, p) for p in range(partitions)}:
        assert time.monotonic() < deadline, f"never assigned every partition: {consumer.assignment()}"
        await consumer.poll(timeout_s=0.2)


async def test_idle_consumer_paces_its_fetches_and_still_gets_new_records(log: KafkaEventLog) -> None:
    topic = f"test.idle-fetch.{uuid.uuid4().hex[:8]}"
    await log.create_topic(topic, partitions=2)
    consumer = log.consumer([topic], group_id=f"idle-{uuid.uuid4().hex[:8]}", start_from="latest")
    try:
        await _assigned(consumer, topic, 2)
        sent = _count_fetches(consumer)
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            assert await consumer.poll(timeout_s=0.2) == []
        idle_s = time.monotonic() - started
        # one broker node: at most one fetch in flight, each empty one lasting >= WAIT_MS (unpaced: thousands)
        assert 0 < len(sent) <= idle_s * 1000 / WAIT_MS + 2, f"{len(sent)} fetches in {idle_s:.1f}s idle"

        await log.append_batch([OutgoingRecord(topic, f"k{i}".encode(), b"v") for i in range(4)])
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 4:
            assert time.monotonic() < deadline, f"only {len(got)} of 4 records arrived"
            got.extend(await consumer.poll(timeout_s=0.2))
    finally:
        await consumer.aclose()


async def test_only_empty_fetches_wait() -> None:
    """A fetch that brought records returns at once; an empty one that came back early waits out the rest."""

    class Fetcher:
        def __init__(self) -> None:
            self.results = [True, False]

        async def _proc_fetch_request(self, *args: Any) -> bool:
            return self.results.pop(0)

    class Consumer:
        _fetcher = Fetcher()

    assert pace_empty_fetches(Consumer(), WAIT_MS / 1000)  # type: ignore[arg-type]
    fetch = Consumer._fetcher._proc_fetch_request
    started = time.monotonic()
    assert await fetch() is True
    assert time.monotonic() - started < WAIT_MS / 1000 / 2
    started = time.monotonic()
    assert await fetch() is False
    assert time.monotonic() - started >= WAIT_MS / 1000 * 0.9
    assert not pace_empty_fetches(object(), WAIT_MS / 1000)  # type: ignore[arg-type]
