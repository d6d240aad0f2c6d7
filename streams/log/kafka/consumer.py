"""Kafka consumers over aiokafka, the lazy aiokafka import and the aiokafka -> error tree mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from schemas.envelope import Position, Record
from schemas.errors import BrokerUnavailable, PayloadTooLarge, TransportError
from streams.log.base import Consumer, OutgoingRecord, StartFrom, TopicPartition

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

__all__ = ["INSTALL_HINT", "KafkaConsumer", "load_aiokafka", "map_kafka_errors", "pace_empty_fetches", "to_record"]

logger = logging.getLogger(__name__)

Transact = Callable[[str, Sequence[OutgoingRecord], Mapping[TopicPartition, int]], Awaitable[list[Position]]]
"""(group, records, offsets) -> positions: append and commit in one Kafka transaction."""

INSTALL_HINT = 'the Kafka event log needs aiokafka: pip install "memos-stream[kafka]"'
POSITION_DEADLINE_S = 30.0
"""How long a poll waits for the start position of a newly assigned partition before the stage fails."""


def load_aiokafka() -> ModuleType:
    """Import aiokafka on first use; ImportError with the install hint when it is missing."""
    try:
        import aiokafka
        import aiokafka.admin  # noqa: F401
        import aiokafka.errors  # noqa: F401
        import aiokafka.structs  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    module: ModuleType = aiokafka
    return module


@contextmanager
def map_kafka_errors(action: str, servers: str) -> Iterator[None]:
    """Translate aiokafka errors: retriable ones -> BrokerUnavailable, too large -> PayloadTooLarge,
    the rest -> TransportError (always ``from`` the original)."""
    try:
        yield
    except TimeoutError as exc:
        raise BrokerUnavailable(f"kafka {servers!r}: {action} timed out") from exc
    except Exception as exc:
        errors = sys.modules.get("aiokafka.errors")
        if errors is None:
            raise
        if isinstance(exc, errors.ConsumerStoppedError):
            raise TransportError(f"kafka {servers!r}: {action} failed: the consumer is stopped") from exc
        if not isinstance(exc, errors.KafkaError):
            raise
        text = f"kafka {servers!r}: {action} failed: {exc!r}"
        if isinstance(exc, errors.MessageSizeTooLargeError | errors.RecordTooLargeError):
            raise PayloadTooLarge(text) from exc
        unavailable = (
            errors.KafkaTimeoutError,
            errors.KafkaUnavailableError,
            errors.BrokerNotAvailableError,
            errors.KafkaConnectionError,
            errors.NoBrokersAvailable,
        )
        if getattr(exc, "retriable", False) or isinstance(exc, unavailable):
            raise BrokerUnavailable(text) from exc
        raise TransportError(text) from exc


def pace_empty_fetches(consumer: AIOKafkaConsumer, wait_s: float) -> bool:
    """Make a started consumer's empty fetches last at least ``wait_s``, as Kafka's long poll does.

    Kafka holds a fetch that finds nothing for up to ``fetch_max_wait_ms``; a broker that answers it at
    once (noida-db does) makes aiokafka's fetcher ask again straight away, thousands of times a second,
    and an idle consumer then burns most of a core on its event loop (measured: ~3,000 fetches/s, 0.9
    CPU-s/s per consumer). An empty answer that came back sooner than ``wait_s`` waits out the rest here;
    an answer with records returns at once, and a broker that long-polls is unaffected (its empty answers
    take ``fetch_max_wait_ms``). Hooks aiokafka's fetcher (a private method, checked): False when absent.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    fetch = getattr(fetcher, "_proc_fetch_request", None)
    if fetcher is None or fetch is None or wait_s <= 0:
        if wait_s > 0:
            logger.warning("aiokafka fetcher not found: empty fetches are not paced")
        return False

    async def paced(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        has_records = await fetch(*args, **kwargs)
        if not has_records:
            rest = wait_s - (time.monotonic() - started)
            if rest > 0:
                try:
                    await asyncio.sleep(rest)
                except asyncio.CancelledError:  # closed or unassigned: end like aiokafka's own fetch does
                    return False
        return has_records

    fetcher._proc_fetch_request = paced
    return True


def to_record(raw: Any) -> Record:
    """An aiokafka ConsumerRecord as our Record."""
    headers = tuple((str(k), bytes(v)) for k, v in (raw.headers or ()))
    return Record(
        Position(raw.topic, raw.partition, raw.offset), raw.key, raw.value, headers, int(raw.timestamp)
    )


class KafkaConsumer(Consumer):
    """An aiokafka consumer (auto-commit off); started at the first call that needs it.

    Before starting it creates missing topics with the log's partition count, so the broker never
    auto-creates them with its own default.
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        group_id: str | None,
        start_from: StartFrom,
        servers: str,
        options: Mapping[str, Any],
        ensure_topic: Callable[[str], Awaitable[int]],
        transact: Transact | None = None,
        empty_fetch_wait_s: float = 0.0,
    ) -> None:
        if not topics:
            raise TransportError("a consumer needs at least one topic")
        self._topics = tuple(dict.fromkeys(topics))
        self._group = group_id
        self._start_from = start_from
        self._servers = servers
        self._options = dict(options)
        self._ensure_topic = ensure_topic
        self._transact = transact
        self._empty_fetch_wait_s = empty_fetch_wait_s
        self._consumer: AIOKafkaConsumer | None = None
        self._consumed: dict[TopicPartition, int] = {}
        self._positioned: set[Any] = set()
        self._closed = False

    async def _started(self) -> AIOKafkaConsumer:
        if self._closed:
            raise TransportError("consumer is closed")
        if self._consumer is not None:
            return self._consumer
        aiokafka = load_aiokafka()
        for topic in self._topics:
            await self._ensure_topic(topic)
        consumer = aiokafka.AIOKafkaConsumer(
            *self._topics,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self._start_from == "latest" else "earliest",
            **self._options,
        )
        try:
            with map_kafka_errors("start consumer", self._servers):
                await consumer.start()
        except BaseException:  # failed, or cancelled while joining the group (a stop): it leaves the group now
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        pace_empty_fetches(consumer, self._empty_fetch_wait_s)
        self._consumer = consumer
        return consumer

    def assignment(self) -> set[TopicPartition]:
        """Partitions assigned now (empty before the first poll)."""
        if self._consumer is None or self._closed:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Records in offset order per partition; [] after ``timeout_s``."""
        consumer = await self._started()
        with map_kafka_errors("poll", self._servers):
            batch = await consumer.getmany(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max(1, max_records)
            )
            # Pin the start position of new partitions now, so 'latest' means "latest when assigned".
            assigned = set(consumer.assignment())
            for tp in assigned - self._positioned:
                try:  # aiokafka waits for a position without an end (seen after a rebalance on noida-db)
                    await asyncio.wait_for(consumer.position(tp), POSITION_DEADLINE_S)
                except TimeoutError:
                    raise BrokerUnavailable(
                        f"the position of {tp.topic}/{tp.partition} was not known after {POSITION_DEADLINE_S:g}s "
                        f"(group {self._group!r}); the stage stops rather than wait unseen") from None
            self._positioned = assigned
        out: list[Record] = []
        for tp, raws in batch.items():
            out.extend(to_record(raw) for raw in raws)
            if raws:
                self._consumed[(tp.topic, tp.partition)] = raws[-1].offset + 1
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit next-offsets; partitions no longer assigned (rebalanced away) are skipped with a warning."""
        if self._group is None:
            raise TransportError("commit needs a consumer with a group_id")
        consumer = await self._started()
        aiokafka = load_aiokafka()
        todo = dict(self._consumed if offsets is None else offsets)
        assigned = self.assignment()
        for topic, partition in sorted(set(todo) - assigned):
            logger.warning(
                "commit skipped, partition not assigned group=%s topic=%s partition=%s offset=%s",
                self._group,
                topic,
                partition,
                todo[(topic, partition)],
            )
        todo = {tp: int(o) for tp, o in todo.items() if tp in assigned}
        await self._past_markers(consumer, todo)
        keep = {aiokafka.TopicPartition(t, p): o for (t, p), o in todo.items()}
        if not keep:
            return
        with map_kafka_errors("commit", self._servers):
            try:
                await consumer.commit(keep)
            except aiokafka.errors.CommitFailedError as exc:
                logger.warning("commit failed after a rebalance group=%s error=%s", self._group, exc)

    async def _past_markers(self, consumer: AIOKafkaConsumer, todo: dict[TopicPartition, int]) -> None:
        """Where a commit reaches the last record returned so far, move it to the fetch position: past
        transaction markers, which take offsets but are never returned (else a group that read every
        record would never reach the end offset)."""
        aiokafka = load_aiokafka()
        for tp, offset in todo.items():
            if self._consumed.get(tp) != offset:
                continue
            with map_kafka_errors("position", self._servers):
                position = await consumer.position(aiokafka.TopicPartition(*tp))
            if position > offset:
                todo[tp] = position

    async def record_attempt(self, topic: str, partition: int, offset: int) -> int:
        """Count an attempt at the record at ``offset`` in the group's commit metadata (``attempt:<offset>:<n>``),
        leaving the committed offset where it is; 0 for a partition not assigned here."""
        if self._group is None:
            return 0
        consumer = await self._started()
        if (topic, partition) not in self.assignment():
            return 0
        aiokafka = load_aiokafka()
        tp = aiokafka.TopicPartition(topic, partition)
        with map_kafka_errors("record attempt", self._servers):
            # aiokafka's public committed() drops the metadata: ask the group coordinator for both
            known = (await consumer._coordinator.fetch_committed_offsets([tp])).get(tp)
            attempts = 1
            metadata = getattr(known, "metadata", "") or ""
            if metadata.startswith("attempt:"):
                _, at, count = metadata.split(":", 2)
                if at.isdigit() and count.isdigit() and int(at) == offset:
                    attempts = int(count) + 1
            committed = known.offset if known is not None and known.offset >= 0 else offset
            try:
                await consumer.commit({tp: aiokafka.structs.OffsetAndMetadata(committed, f"attempt:{offset}:{attempts}")})
            except aiokafka.errors.CommitFailedError as exc:  # rebalanced away: the new owner counts
                logger.warning("attempt not recorded after a rebalance group=%s error=%s", self._group, exc)
                return 0
        return attempts

    async def commit_with(self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]) -> bool:
        """Append ``records`` and commit ``offsets`` in one Kafka transaction (see ``KafkaEventLog.transact``)."""
        if self._group is None or self._transact is None:
            return False
        if not records and not offsets:
            await self._transact(self._group, [], {})
            return True
        consumer = await self._started()
        assigned = self.assignment()
        todo = {tp: int(o) for tp, o in offsets.items() if tp in assigned}
        if len(todo) < len(offsets):
            logger.warning("transactional commit of partitions no longer assigned group=%s skipped=%s",
                           self._group, sorted(set(offsets) - set(todo)))
        await self._past_markers(consumer, todo)
        await self._transact(self._group, records, todo)
        return True

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Next poll of that partition starts at ``offset``; TransportError when it is not assigned."""
        consumer = await self._started()
        if (topic, partition) not in self.assignment():
            raise TransportError(f"partition {topic!r}/{partition} is not assigned to this consumer")
        tp = load_aiokafka().TopicPartition(topic, partition)
        with map_kafka_errors("seek", self._servers):
            consumer.seek(tp, max(0, offset))
        self._positioned.add(tp)

    async def aclose(self) -> None:
        """Leave the group and close the connections; does not commit. Idempotent."""
        if self._closed:
            return
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                with map_kafka_errors("close consumer", self._servers):
                    await consumer.stop()
            except TransportError as exc:
                logger.warning("consumer close failed group=%s error=%s", self._group, exc)
