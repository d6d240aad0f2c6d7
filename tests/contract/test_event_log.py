"""One contract suite for every EventLog adapter: the embedded SQLite log and Kafka (noida-db here)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from schemas.envelope import Record
from schemas.errors import BrokerUnavailable, ConfigError, PayloadTooLarge, TransportError
from streams.log.base import Consumer, EventLog, OutgoingRecord, partition_for
from streams.log.local.log import LocalEventLog
from streams.log.registry import event_log_from_url
from tests.engines import engine_url

PARTITIONS = 4
DEADLINE_S = 30.0


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.engine("kafka"))])
async def event_log(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[EventLog]:
    """A started log of each adapter; topics and groups are made unique per test by the tests."""
    if request.param == "local":
        log = event_log_from_url(
            f"sqlite:///{tmp_path / 'log.db'}", partitions=PARTITIONS, heartbeat_interval_s=0.2
        )
    else:
        url = engine_url("kafka")
        log = event_log_from_url(url, partitions=PARTITIONS, heartbeat_interval_ms=200)
    await log.start()
    try:
        yield log
    finally:
        await log.aclose()
        if request.param == "kafka":
            await _delete_topics(url.removeprefix("kafka://"), f"test.log.{unique}")


async def _delete_topics(servers: str, prefix: str) -> None:
    """Keep the broker's (JSON) data small: drop this test's topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        victims = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if victims:
            await admin.delete_topics(victims)
    finally:
        await admin.close()


@pytest.fixture
def topic(unique: str) -> str:
    return f"test.log.{unique}"


@pytest.fixture
def group(unique: str) -> str:
    return f"test.group.{unique}"


async def collect(
    consumers: list[Consumer],
    done: Callable[[list[list[Record]]], bool],
    *,
    deadline_s: float = DEADLINE_S,
    timeout_s: float = 0.2,
) -> list[list[Record]]:
    """Poll all consumers together until ``done(received per consumer)`` holds; fail at the deadline."""
    received: list[list[Record]] = [[] for _ in consumers]
    deadline = time.monotonic() + deadline_s
    while not done(received):
        if time.monotonic() > deadline:
            pytest.fail(
                f"condition not met within {deadline_s}s; received {[len(r) for r in received]} records"
            )
        batches = await asyncio.gather(*(c.poll(max_records=100, timeout_s=timeout_s) for c in consumers))
        for bucket, batch in zip(received, batches, strict=True):
            bucket.extend(batch)
    return received


async def drain(consumer: Consumer, *, quiet_s: float = 0.5) -> list[Record]:
    """Everything the consumer still delivers until a poll of ``quiet_s`` comes back empty."""
    out: list[Record] = []
    while batch := await consumer.poll(max_records=100, timeout_s=quiet_s):
        out.extend(batch)
    return out


def pos(records: list[Record]) -> set[tuple[int, int]]:
    return {(r.position.partition, r.position.offset) for r in records}


async def fill(log: EventLog, topic: str, n: int, *, prefix: str = "v") -> list[OutgoingRecord]:
    records = [OutgoingRecord(topic, f"key-{i % 7}".encode(), f"{prefix}-{i}".encode()) for i in range(n)]
    await log.create_topic(topic, partitions=PARTITIONS)
    await log.append_batch(records)
    return records


async def test_offsets_start_at_zero_and_grow_by_one_per_partition(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)
    positions = [await event_log.append(topic, f"k{i % 5}".encode(), b"x%d" % i) for i in range(20)]
    by_partition: dict[int, list[int]] = {}
    for p in positions:
        assert p.topic == topic
        by_partition.setdefault(p.partition, []).append(p.offset)
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))
    ends = await event_log.end_offsets(topic)
    assert ends == {p: len(by_partition.get(p, [])) for p in range(PARTITIONS)}


async def test_same_key_same_partition_in_append_order(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)
    sent: dict[bytes, list[bytes]] = {}
    for i in range(30):
        key = f"cube-{i % 6}".encode()
        value = f"{key.decode()}#{i}".encode()
        position = await event_log.append(topic, key, value)
        assert position.partition == partition_for(key, PARTITIONS)
        sent.setdefault(key, []).append(value)
    for key, values in sent.items():
        records = await event_log.read(topic, partition_for(key, PARTITIONS), 0, limit=100)
        assert [r.value for r in records if r.key == key] == values


async def test_append_batch_positions_follow_input_order(event_log: EventLog, topic: str) -> None:
    records = [OutgoingRecord(topic, f"k{i % 3}".encode(), b"b%d" % i) for i in range(12)]
    positions = await event_log.append_batch(records)
    assert len(positions) == len(records)
    for record, position in zip(records, positions, strict=True):
        assert position.partition == partition_for(record.key, PARTITIONS)
        (stored,) = await event_log.read(topic, position.partition, position.offset, limit=1)
        assert stored.value == record.value and stored.position == position
    assert await event_log.append_batch([]) == []


async def test_topics_partitions_and_end_offsets(event_log: EventLog, topic: str) -> None:
    assert await event_log.partitions(topic) == 0
    assert await event_log.end_offsets(topic) == {}
    await event_log.create_topic(topic, partitions=3)
    await event_log.create_topic(topic, partitions=8)  # exists: keeps 3
    assert await event_log.partitions(topic) == 3
    assert await event_log.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    implicit = f"{topic}.implicit"
    await event_log.append(implicit, b"k", b"v")
    assert await event_log.partitions(implicit) == PARTITIONS
    with pytest.raises(ConfigError, match="invalid topic"):
        await event_log.create_topic("bad topic/name", partitions=1)


async def test_headers_and_timestamp_round_trip(event_log: EventLog, topic: str) -> None:
    headers = (("trace", b"t-1"), ("binary", bytes(range(256))), ("trace", b"t-2"), ("empty", b""))
    before = int(time.time() * 1000)
    position = await event_log.append(topic, b"k", b"payload", headers)
    after = int(time.time() * 1000)
    (record,) = await event_log.read(topic, position.partition, position.offset, limit=1)
    assert record.headers == headers
    assert record.header("trace") == b"t-2"
    assert record.key == b"k" and record.value == b"payload"
    assert before - 5_000 <= record.timestamp_ms <= after + 5_000
    (keyless,) = await event_log.read(
        topic, (await event_log.append(topic, None, b"nokey")).partition, 0, limit=1
    )
    assert keyless.key is None and keyless.headers == ()


async def test_large_message_round_trip(event_log: EventLog, topic: str) -> None:
    value = bytes(i % 251 for i in range(512 * 1024))
    position = await event_log.append(topic, b"big", value)
    (record,) = await event_log.read(topic, position.partition, position.offset, limit=1)
    assert record.value == value


async def test_oversized_record_is_refused(event_log: EventLog, topic: str) -> None:
    with pytest.raises(PayloadTooLarge, match="max_record_bytes"):
        await event_log.append(topic, b"k", b"x" * (2 * 1024 * 1024))
    assert sum((await event_log.end_offsets(topic)).values()) == 0


async def test_concurrent_producers_each_record_once(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)

    async def produce(worker: int) -> list[tuple[int, int, bytes]]:
        acked = []
        for i in range(20):
            value = f"w{worker}-{i}".encode()
            p = await event_log.append(topic, f"key-{(worker + i) % 9}".encode(), value)
            acked.append((p.partition, p.offset, value))
        return acked

    results = await asyncio.gather(*(produce(w) for w in range(5)))
    acked = [item for batch in results for item in batch]
    assert len({(p, o) for p, o, _ in acked}) == len(acked) == 100
    stored = {}
    for partition in range(PARTITIONS):
        for record in await event_log.read(topic, partition, 0, limit=1000):
            stored[(partition, record.position.offset)] = record.value
    assert stored == {(p, o): v for p, o, v in acked}


async def test_read_pages_through_a_partition(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=1)
    await event_log.append_batch([OutgoingRecord(topic, b"k", b"%d" % i) for i in range(25)])
    pages, offset = [], 0
    while records := await event_log.read(topic, 0, offset, limit=10):
        pages.append(len(records))
        offset = records[-1].position.offset + 1
    assert pages == [10, 10, 5]
    assert await event_log.read(topic, 0, 25) == []
    assert [r.value for r in await event_log.read(topic, 0, 20, limit=100)] == [
        b"%d" % i for i in range(20, 25)
    ]


async def test_read_key_pages_through_one_keys_records_below_an_end(event_log: EventLog, topic: str) -> None:
    # a replay's read: the key's (offset, value) pairs only, in pages, up to (not including) ``end``
    await event_log.create_topic(topic, partitions=1)
    keys = [b"a" if i % 3 else b"b" for i in range(40)]  # offsets 0, 3, 6, ... are b's
    await event_log.append_batch([OutgoingRecord(topic, k, b"%d" % i) for i, k in enumerate(keys)])
    await event_log.append(topic, b"a", b"after the end")
    end = 40
    pages, offset = [], 0
    while offset < end:
        values, offset = await event_log.read_key(topic, 0, b"a", offset, end, limit=7)
        assert offset <= end
        pages.append(values)
    a_offsets = [i for i, k in enumerate(keys) if k == b"a"]
    assert [o for page in pages for o, _ in page] == a_offsets  # every one, in order, none past the end
    assert [v for page in pages for _, v in page] == [b"%d" % i for i in a_offsets]
    assert [len(page) for page in pages[:-1]] == [7] * (len(pages) - 1)  # full pages until the last
    assert await event_log.read_key(topic, 0, b"b", 38, end, limit=7) == ([(39, b"39")], end)
    assert await event_log.read_key(topic, 0, b"b", 37, 39, limit=7) == ([], 39)
    assert await event_log.read_key(topic, 0, b"b", 36, end, limit=1) == ([(36, b"36")], 37)
    assert await event_log.read_key(topic, 0, b"zz", 0, end, limit=5) == ([], end)
    assert await event_log.read_key(topic, 0, b"a", end, end, limit=5) == ([], end)


async def test_consumer_earliest_replays_from_zero(event_log: EventLog, topic: str) -> None:
    sent = await fill(event_log, topic, 30)
    async with event_log.consumer([topic], start_from="earliest") as consumer:
        (got,) = await collect([consumer], lambda r: len(r[0]) >= len(sent))
        got += await drain(consumer, quiet_s=0.3)
        assert consumer.assignment() == {(topic, p) for p in range(PARTITIONS)}
    assert sorted(r.value for r in got) == sorted(r.value for r in sent)
    for partition in range(PARTITIONS):
        offsets = [r.position.offset for r in got if r.position.partition == partition]
        assert offsets == list(range(len(offsets)))
    with pytest.raises(TransportError, match="group"):
        await event_log.consumer([topic]).commit({(topic, 0): 1})


async def test_consumer_latest_sees_only_new_records(event_log: EventLog, topic: str) -> None:
    await fill(event_log, topic, 10, prefix="old")
    async with event_log.consumer([topic], start_from="latest") as consumer:
        await collect([consumer], lambda _: len(consumer.assignment()) == PARTITIONS)
        new = [OutgoingRecord(topic, f"key-{i}".encode(), f"new-{i}".encode()) for i in range(8)]
        await event_log.append_batch(new)
        (got,) = await collect([consumer], lambda r: len(r[0]) >= len(new))
        got += await drain(consumer, quiet_s=0.3)
    assert sorted(r.value for r in got) == sorted(r.value for r in new)


async def test_seek_moves_the_next_poll(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=1)
    await event_log.append_batch([OutgoingRecord(topic, b"k", b"%d" % i) for i in range(6)])
    async with event_log.consumer([topic], start_from="earliest") as consumer:
        (got,) = await collect([consumer], lambda r: len(r[0]) >= 6)
        await consumer.seek(topic, 0, 3)
        (again,) = await collect([consumer], lambda r: len(r[0]) >= 3)
        with pytest.raises(TransportError, match="not assigned"):
            await consumer.seek(topic, 5, 0)
    assert [r.position.offset for r in again][:3] == [3, 4, 5]


async def test_commit_then_redelivery_of_uncommitted(event_log: EventLog, topic: str, group: str) -> None:
    sent = await fill(event_log, topic, 24)
    first = event_log.consumer([topic], group_id=group)
    batch: list[Record] = []
    while not batch:
        batch = await first.poll(max_records=5, timeout_s=0.5)
    await first.commit()
    committed_at: dict[int, int] = {}
    for r in batch:
        committed_at[r.position.partition] = max(
            committed_at.get(r.position.partition, 0), r.position.offset + 1
        )
    (rest,) = await collect([first], lambda r: len(r[0]) + len(batch) >= len(sent))
    await first.aclose()  # leaves the group without committing `rest`
    assert await event_log.committed(group, topic) == committed_at

    second = event_log.consumer([topic], group_id=group)
    ends = await event_log.end_offsets(topic)
    expected = {(p, o) for p, end in ends.items() for o in range(committed_at.get(p, 0), end)}
    async with second:
        (redelivered,) = await collect([second], lambda r: pos(r[0]) >= expected)
        redelivered += await drain(second, quiet_s=0.3)
        assert pos(redelivered) == expected
        await second.commit()
    assert await event_log.committed(group, topic) == ends

    new = [OutgoingRecord(topic, f"key-{i}".encode(), f"new-{i}".encode()) for i in range(4)]
    await event_log.append_batch(new)
    async with event_log.consumer([topic], group_id=group, start_from="latest") as third:  # commits win
        (got,) = await collect([third], lambda r: len(r[0]) >= len(new))
        got += await drain(third, quiet_s=0.3)
    assert sorted(r.value for r in got) == sorted(r.value for r in new)


async def test_group_members_split_partitions_and_hand_over(
    event_log: EventLog, topic: str, group: str
) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)
    everything = {(topic, p) for p in range(PARTITIONS)}
    c1 = event_log.consumer([topic], group_id=group)
    c2 = event_log.consumer([topic], group_id=group)
    try:
        await collect([c1], lambda _: c1.assignment() == everything)

        def split(_: list[list[Record]]) -> bool:
            a, b = c1.assignment(), c2.assignment()
            return bool(a) and bool(b) and not a & b and a | b == everything

        await collect([c1, c2], split)
        sent = [OutgoingRecord(topic, f"key-{i}".encode(), b"%d" % i) for i in range(24)]
        await event_log.append_batch(sent)
        got1, got2 = await collect([c1, c2], lambda r: len(r[0]) + len(r[1]) >= len(sent))
        assert {(topic, r.position.partition) for r in got1} <= c1.assignment()
        assert {(topic, r.position.partition) for r in got2} <= c2.assignment()
        assert sorted(r.value for r in got1 + got2) == sorted(r.value for r in sent)

        handed = {p for _, p in c2.assignment()}
        expected = {(r.position.partition, r.position.offset) for r in got2}
        await c2.aclose()  # nothing committed: c2's records come again to c1
        (after,) = await collect(
            [c1],
            lambda r: c1.assignment() == everything and {x for x in pos(r[0]) if x[0] in handed} >= expected,
        )
        assert expected
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_group_processes_are_known_locally_and_unknown_on_kafka(
    event_log: EventLog, topic: str, group: str
) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)
    if not isinstance(event_log, LocalEventLog):
        assert await event_log.group_processes(group) is None  # Kafka keeps members by client id only
        return
    assert await event_log.group_processes(group) == []
    consumer = event_log.consumer([topic], group_id=group)
    try:
        await collect([consumer], lambda _: bool(consumer.assignment()))
        assert await event_log.group_processes(group) == [(socket.gethostname(), os.getpid())]
    finally:
        await consumer.aclose()
    assert await event_log.group_processes(group) == []  # a member that left is not live


async def test_forget_key_deletes_locally_and_is_refused_by_kafka(event_log: EventLog, topic: str) -> None:
    await event_log.create_topic(topic, partitions=PARTITIONS)
    await event_log.append_batch(
        [OutgoingRecord(topic, f"cube-{i % 3}".encode(), b"%d" % i) for i in range(9)]
    )
    ends = await event_log.end_offsets(topic)
    if type(event_log).__name__ == "KafkaEventLog":
        with pytest.raises(TransportError, match="cannot delete"):
            await event_log.forget_key(topic, b"cube-1")
        return
    assert await event_log.forget_key(topic, b"cube-1") == 3
    remaining = [r for p in range(PARTITIONS) for r in await event_log.read(topic, p, 0, limit=100)]
    assert len(remaining) == 6 and all(r.key != b"cube-1" for r in remaining)
    assert await event_log.end_offsets(topic) == ends  # offsets are never reused
    async with event_log.consumer([topic], start_from="earliest") as consumer:
        (got,) = await collect([consumer], lambda r: len(r[0]) >= 6)
        assert sorted(r.value for r in got) == sorted(r.value for r in remaining)
    assert await event_log.forget_key(topic, b"cube-1") == 0


def test_registry_picks_adapters_by_scheme(tmp_path: Path) -> None:
    log = event_log_from_url(f"sqlite:///{tmp_path / 'x.db'}")
    assert type(log).__name__ == "LocalEventLog" and log.path == tmp_path / "x.db"  # type: ignore[attr-defined]
    log = event_log_from_url(f"local://{tmp_path}")
    assert log.path == tmp_path / "log.db"  # type: ignore[attr-defined]
    kafka = event_log_from_url("kafka://127.0.0.1:1,127.0.0.1:2", partitions=2)
    assert type(kafka).__name__ == "KafkaEventLog" and kafka.servers == "127.0.0.1:1,127.0.0.1:2"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="'redis'"):
        event_log_from_url("redis://localhost:6379")


@pytest.mark.parametrize("url", ["kafka://127.0.0.1:1", "sqlite:////proc/no-such-dir/log.db"])
async def test_unreachable_log_raises_broker_unavailable(url: str) -> None:
    log = event_log_from_url(url, **({"request_timeout_ms": 2000} if url.startswith("kafka") else {}))
    with pytest.raises(BrokerUnavailable):
        await log.start()
    with pytest.raises(TransportError, match="not started"):
        await log.append("t", b"k", b"v")


async def test_kafka_adapter_without_aiokafka_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    log = event_log_from_url("kafka://127.0.0.1:1")
    with pytest.raises(ImportError, match=r'pip install "memos-stream\[kafka\]"'):
        await log.start()


async def test_attempts_at_a_record_are_counted_beside_the_group_offsets(
        event_log: EventLog, topic: str, group: str) -> None:
    """Poison detection: attempts survive the consumer (kept with the group's offsets), count per record,
    start again at a new record, and never move the committed offset."""
    await fill(event_log, topic, 6)
    first = event_log.consumer([topic], group_id=group)
    batch: list[Record] = []
    while not batch:
        batch = await first.poll(max_records=3, timeout_s=0.5)
    p = batch[0].position
    assert await first.record_attempt(p.topic, p.partition, p.offset) == 1
    await first.aclose()  # "dies" before committing
    second = event_log.consumer([topic], group_id=group)
    async with second:
        while (p.topic, p.partition) not in second.assignment():
            await second.poll(max_records=1, timeout_s=0.5)
        assert await second.record_attempt(p.topic, p.partition, p.offset) == 2
        assert await second.record_attempt(p.topic, p.partition, p.offset + 1) == 1
        assert (await event_log.committed(group, topic)).get(p.partition, 0) == p.offset  # not moved
        await second.commit({(p.topic, p.partition): p.offset + 2})
        assert await second.record_attempt(p.topic, p.partition, p.offset + 2) == 1
    assert (await event_log.committed(group, topic))[p.partition] == p.offset + 2
