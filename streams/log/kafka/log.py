"""KafkaEventLog: the EventLog port over a Kafka-protocol broker with aiokafka (imported lazily).

The producer uses ``acks="all"`` and the idempotent producer, and always names the partition
explicitly with ``partition_for``, so a key lands on the same partition number as on the embedded log.
Topics are created through the admin client with the configured partition count. Consumers commit
manually (auto-commit off). Kafka cannot delete single records, so ``forget_key`` raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from schemas.envelope import Header, Position, Record
from schemas.errors import BrokerUnavailable, ConfigError, TransportError
from streams.log.base import (
    Consumer,
    EventLog,
    OutgoingRecord,
    StartFrom,
    TopicPartition,
    check_record,
    check_topic,
    partition_for,
)
from streams.log.kafka.consumer import (
    KafkaConsumer,
    load_aiokafka,
    map_kafka_errors,
    pace_empty_fetches,
    to_record,
)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["KafkaEventLog"]

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_CONFIG_ERROR_CODES = {17: "invalid topic", 37: "invalid partitions", 38: "invalid replication factor"}
_FETCH_HEADROOM = 64 * 1024


class KafkaEventLog(EventLog):
    """The event log on Kafka (or any broker speaking its protocol).

    :param bootstrap_servers: ``"host:port"``, a comma-separated list, or a sequence of them.
    :param partitions: partition count of topics this log creates (explicitly or on first append).
    :param replication_factor: replication factor of created topics.
    :param session_timeout_ms: consumer group session timeout.
    :param heartbeat_interval_ms: consumer heartbeat interval (lower: faster rebalances).
    :param max_record_bytes: larger records are refused with PayloadTooLarge before sending.
    :param read_timeout_s: how long ``read`` waits for records it knows exist.
    :param empty_fetch_wait_ms: least time an empty fetch takes (``pace_empty_fetches``; 0: off). A broker
        that long-polls is unaffected; one that answers empty fetches at once (noida-db) is asked ~20 times
        a second per idle consumer instead of ~3,000.

    Group consumers get the client id ``<client_id>-<worker_id>``: the broker's view of a group names the
    worker of each member, and the range of member ids sorts by worker, so the round-robin assignor gives
    a worker the same partition numbers in every group (its deriver's cubes are the ones its projector
    applies).
    """

    forgets = False

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        partitions: int = 4,
        replication_factor: int = 1,
        client_id: str = "memos",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        request_timeout_ms: int = 30_000,
        linger_ms: int = 0,
        max_record_bytes: int = 1_048_576,
        read_timeout_s: float = 10.0,
        transaction_timeout_ms: int = 15_000,
        worker_id: str | None = None,
        empty_fetch_wait_ms: int = 50,
    ) -> None:
        servers = [bootstrap_servers] if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
        self.servers = ",".join(s.strip() for part in servers for s in part.split(",") if s.strip())
        if not self.servers:
            raise ConfigError("KafkaEventLog needs at least one bootstrap server (host:port)")
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions!r}")
        self.default_partitions = partitions
        self.replication_factor = replication_factor
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.request_timeout_ms = request_timeout_ms
        self.linger_ms = linger_ms
        self.max_record_bytes = max_record_bytes
        self.read_timeout_s = read_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._reader_lock = asyncio.Lock()
        self._partition_counts: dict[str, int] = {}
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()
        self._tx_producers: dict[str, AIOKafkaProducer] = {}
        self._tx_locks: dict[str, asyncio.Lock] = {}
        self.transaction_timeout_ms = transaction_timeout_ms
        self.empty_fetch_wait_ms = empty_fetch_wait_ms
        """Least time an empty fetch takes (``pace_empty_fetches``): a broker that does not hold empty
        fetches is asked at most 1000/this times a second per consumer instead of thousands (0: off)."""
        self.worker_id = worker_id or os.environ.get("MEMOS_WORKER_ID") or socket.gethostname()
        """Names this process's transactional producers (``memos.<group>.<worker_id>``): a restarted worker
        with the same id fences its predecessor and aborts the transaction it left open."""

    def __repr__(self) -> str:
        return f"KafkaEventLog({self.servers!r})"

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }

    def _consumer_options(self) -> dict[str, Any]:
        return {
            **self._client_options(),
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_partition_fetch_bytes": max(1_048_576, self.max_record_bytes + _FETCH_HEADROOM),
            # records of an aborted transaction (a derivation that crashed before committing) are never read
            "isolation_level": "read_committed",
        }

    async def start(self) -> None:
        """Connect the producer, the admin client and the reader. Idempotent. Raises BrokerUnavailable."""
        if self._producer is not None:
            return
        aiokafka = load_aiokafka()
        producer = aiokafka.AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            max_request_size=self.max_record_bytes + _FETCH_HEADROOM,
            **self._client_options(),
        )
        admin = aiokafka.admin.AIOKafkaAdminClient(**self._client_options())
        reader = aiokafka.AIOKafkaConsumer(enable_auto_commit=False, **self._consumer_options())
        try:
            with map_kafka_errors("connect", self.servers):
                for client in (producer, admin, reader):
                    await client.start()
        except BaseException as exc:
            for client in (reader, admin, producer):  # stop all, started or not, to release sockets
                with contextlib.suppress(Exception):
                    await (client.close() if client is admin else client.stop())
            if isinstance(exc, TransportError) and not isinstance(exc, BrokerUnavailable):
                raise BrokerUnavailable(str(exc)) from exc
            raise
        pace_empty_fetches(reader, self.empty_fetch_wait_ms / 1000)
        self._producer, self._admin, self._reader = producer, admin, reader
        logger.info("kafka log connected servers=%s", self.servers)

    async def aclose(self) -> None:
        """Flush the producer, close consumers this log made, and disconnect. Idempotent."""
        producer, admin, reader = self._producer, self._admin, self._reader
        self._producer = self._admin = self._reader = None
        for consumer in list(self._consumers):
            await consumer.aclose()
        tx_producers, self._tx_producers = list(self._tx_producers.values()), {}
        with map_kafka_errors("close", self.servers):
            for tx in tx_producers:
                await tx.stop()
            if producer is not None:
                await producer.stop()
            if reader is not None:
                await reader.stop()
            if admin is not None:
                await admin.close()

    def _clients(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._producer is None or self._admin is None or self._reader is None:
            raise TransportError(f"{self!r} is not started (call await log.start())")
        return self._producer, self._admin, self._reader

    async def create_topic(self, topic: str, *, partitions: int) -> None:
        """Create a topic with the admin client; a no-op when it exists."""
        check_topic(topic)
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions!r}")
        _, admin, _ = self._clients()
        new_topic = load_aiokafka().admin.NewTopic(topic, partitions, self.replication_factor)
        with map_kafka_errors(f"create topic {topic!r}", self.servers):
            response = await admin.create_topics([new_topic], timeout_ms=self.request_timeout_ms)
        for name, code, message, *_ in response.topic_errors:
            if code in (0, _TOPIC_ALREADY_EXISTS):
                continue
            reason = f"cannot create topic {name!r} with {partitions} partitions: {message or code}"
            if code in _CONFIG_ERROR_CODES:
                raise ConfigError(f"{reason} ({_CONFIG_ERROR_CODES[code]})")
            raise TransportError(reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_ms / 1000
        while await self.partitions(topic) == 0:
            if loop.time() > deadline:
                raise BrokerUnavailable(f"topic {topic!r} was created but never showed up in metadata")
            await asyncio.sleep(0.05)

    async def partitions(self, topic: str) -> int:
        """Partition count of a topic; 0 when it does not exist (never auto-creates it)."""
        if topic in self._partition_counts:
            return self._partition_counts[topic]
        _, admin, _ = self._clients()
        with map_kafka_errors(f"describe topic {topic!r}", self.servers):
            if topic not in await admin.list_topics():
                return 0
            described = await admin.describe_topics([topic])
        count = sum(len(d.get("partitions", [])) for d in described if d.get("topic") == topic)
        if count:
            self._partition_counts[topic] = count
        return count

    async def _ensure_topic(self, topic: str) -> int:
        count = await self.partitions(topic)
        if count == 0:
            await self.create_topic(topic, partitions=self.default_partitions)
            count = await self.partitions(topic)
        return count

    async def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> Position:
        """Produce one record (acks=all, idempotent) to ``partition_for(key, n)``; returns its position."""
        (position,) = await self.append_batch([OutgoingRecord(topic, key, value, tuple(headers))])
        return position

    async def append_batch(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Produce records pipelined; returns once all are acknowledged, else raises (none acknowledged)."""
        if not records:
            return []
        producer, _, _ = self._clients()
        for record in records:
            check_record(record, self.max_record_bytes)
        counts = {topic: await self._ensure_topic(topic) for topic in dict.fromkeys(r.topic for r in records)}
        with map_kafka_errors("append", self.servers):
            futures = []
            for record in records:
                partition = partition_for(record.key, counts[record.topic])
                futures.append(
                    await producer.send(
                        record.topic,
                        bytes(record.value),
                        key=record.key,
                        partition=partition,
                        headers=[(name, bytes(value)) for name, value in record.headers] or None,
                    )
                )
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return [Position(md.topic, md.partition, md.offset) for md in results]  # type: ignore[union-attr]

    async def _tx_producer(self, group_id: str) -> AIOKafkaProducer:
        producer = self._tx_producers.get(group_id)
        if producer is not None:
            return producer
        self._clients()
        producer = load_aiokafka().AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            transactional_id=f"memos.{group_id}.{self.worker_id}",
            transaction_timeout_ms=self.transaction_timeout_ms,
            linger_ms=self.linger_ms,
            max_request_size=self.max_record_bytes + _FETCH_HEADROOM,
            **self._client_options(),
        )
        with map_kafka_errors("start transactional producer", self.servers):
            await producer.start()  # fences an older producer of this id and aborts its open transaction
        self._tx_producers[group_id] = producer
        return producer

    async def transact(
        self, group_id: str, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> list[Position]:
        """Append ``records`` and commit ``offsets`` for ``group_id`` in ONE Kafka transaction.

        Either both are visible (to read_committed consumers and the group coordinator) or neither is:
        a crash in between leaves an open transaction that the restarted worker's producer aborts (with
        nothing to append or commit, the call only starts that producer: do it before consuming, so a
        transaction left open does not hold read_committed readers back until it times out).
        """
        for record in records:
            check_record(record, self.max_record_bytes)
        counts = {topic: await self._ensure_topic(topic) for topic in dict.fromkeys(r.topic for r in records)}
        lock = self._tx_locks.setdefault(group_id, asyncio.Lock())
        aiokafka = load_aiokafka()
        async with lock:
            producer = await self._tx_producer(group_id)
            if not records and not offsets:  # only (re)start the producer: aborts what a crash left open
                return []
            try:
                with map_kafka_errors("transaction", self.servers):
                    async with producer.transaction():
                        futures = [
                            await producer.send(
                                r.topic, bytes(r.value), key=r.key, partition=partition_for(r.key, counts[r.topic]),
                                headers=[(n, bytes(v)) for n, v in r.headers] or None,
                            )
                            for r in records
                        ]
                        results = await asyncio.gather(*futures)
                        await producer.send_offsets_to_transaction(
                            {aiokafka.TopicPartition(t, p): int(o) for (t, p), o in offsets.items()}, group_id)
            except BaseException:
                # a failed transaction leaves the producer unusable: the next call starts a new one
                self._tx_producers.pop(group_id, None)
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
        return [Position(md.topic, md.partition, md.offset) for md in results]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the high watermark; {} for an unknown topic."""
        count = await self.partitions(topic)
        if count == 0:
            return {}
        _, _, reader = self._clients()
        tps = [load_aiokafka().TopicPartition(topic, p) for p in range(count)]
        async with self._reader_lock:
            with map_kafka_errors(f"end offsets of {topic!r}", self.servers):
                ends = await reader.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def committed(self, group_id: str, topic: str) -> dict[int, int]:
        """Per partition, the group's committed offset (from the group coordinator)."""
        count = await self.partitions(topic)
        if count == 0:
            return {}
        _, admin, _ = self._clients()
        tps = [load_aiokafka().TopicPartition(topic, p) for p in range(count)]
        with map_kafka_errors(f"committed offsets of {group_id!r}", self.servers):
            offsets = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        return {
            tp.partition: int(meta.offset)
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }

    async def read(self, topic: str, partition: int, offset: int, *, limit: int = 500) -> list[Record]:
        """Up to ``limit`` records of one partition from ``offset``, through an unassigned reader (assign+seek)."""
        count = await self.partitions(topic)
        if not 0 <= partition < count:
            return []
        _, _, reader = self._clients()
        tp = load_aiokafka().TopicPartition(topic, partition)
        loop = asyncio.get_running_loop()
        out: list[Record] = []
        async with self._reader_lock:
            with map_kafka_errors(f"read {topic!r}/{partition}", self.servers):
                end = (await reader.end_offsets([tp]))[tp]
                if offset >= end:
                    return []
                reader.assign([tp])
                try:
                    reader.seek(tp, max(0, offset))
                    deadline = loop.time() + self.read_timeout_s
                    while len(out) < limit:
                        batch = await reader.getmany(tp, timeout_ms=200, max_records=limit - len(out))
                        out.extend(to_record(raw) for raw in batch.get(tp, []))
                        if await reader.position(tp) >= end:
                            break
                        if loop.time() > deadline:
                            raise BrokerUnavailable(
                                f"kafka {self.servers!r}: read {topic!r}/{partition} from {offset} got "
                                f"{len(out)} records before timing out (end offset {end})"
                            )
                finally:
                    reader.unsubscribe()  # an assigned reader would keep fetching (prefetch) between reads
        return out

    async def forget_key(self, topic: str, key: bytes) -> int:
        """Always raises TransportError: Kafka cannot delete single records."""
        raise TransportError(
            f"Kafka cannot delete the records of key {key!r} on topic {topic!r}: use per-key encryption "
            "(destroy the key's data key) or topic retention; only the embedded log deletes records"
        )

    async def forget_positions(self, topic: str, positions: Sequence[Position]) -> int:
        """Always raises TransportError: Kafka cannot delete single records."""
        raise TransportError(
            f"Kafka cannot delete single records of topic {topic!r}: use per-key encryption or topic retention; "
            "only the embedded log deletes records"
        )

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str | None = None,
        start_from: StartFrom = "committed",
    ) -> Consumer:
        """An aiokafka consumer (manual commits); it connects at its first poll."""
        self._clients()
        made = KafkaConsumer(
            topics,
            group_id=group_id,
            start_from=start_from,
            servers=self.servers,
            # the worker id in the client id names this process in the broker's view of the group
            options={**self._consumer_options(), "client_id": f"{self.client_id}-{self.worker_id}"},
            ensure_topic=self._ensure_topic,
            transact=self.transact,
            empty_fetch_wait_s=self.empty_fetch_wait_ms / 1000,
        )
        self._consumers.add(made)
        return made
