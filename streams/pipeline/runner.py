"""The runner: poll -> decode -> process -> append produced events -> apply stores -> commit, with a DLQ."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from schemas.codec import decode, encode
from schemas.envelope import Envelope, Header, Record
from schemas.errors import EventDecodeError, is_retryable
from schemas.events import AnyEvent, Event
from schemas.topics import DLQ
from streams.log.base import Consumer, EventLog, OutgoingRecord, StartFrom, TopicPartition

__all__ = ["CommitListener", "Runner", "Stage", "dead_letter_record", "event_record"]

logger = logging.getLogger(__name__)

CommitListener = Callable[[str, dict[TopicPartition, int]], Awaitable[None]]
"""Called with (group, {(topic, partition): next offset}) after every commit."""


class Stage(ABC):
    """A processor hosted by a runner. ``name`` is its consumer group.

    ``handle`` gets decoded envelopes in log order per partition, writes its own stores (idempotently,
    keyed by position) and returns new events for the runner to append. It must be safe to call again
    with records it has already seen (at-least-once delivery).
    """

    name: str = "stage"
    topics: tuple[str, ...] = ()
    start_from: StartFrom = "committed"

    async def start(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Prepare resources. Idempotent."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release resources. Idempotent."""

    @abstractmethod
    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        """Process a batch; return events to append. Raise a retryable error to have it retried."""


def event_record(event: Event) -> OutgoingRecord:
    """The log record of an event: Avro bytes keyed by the event's key, with routing headers."""
    headers: list[Header] = [("event_type", type(event).__name__.encode()), ("producer", event.producer.encode())]
    if event.trace_id:
        headers.append(("trace_id", event.trace_id.encode()))
    return OutgoingRecord(topic=event.topic, key=event.key.encode(), value=encode(event), headers=tuple(headers))


def dead_letter_record(record: Record, error: BaseException, *, group: str) -> OutgoingRecord:
    """The DLQ copy of a record: original bytes and headers plus the error and where it came from."""
    headers = tuple(record.headers) + (
        ("memos.error", str(error)[:2000].encode()),
        ("memos.error_type", type(error).__name__.encode()),
        ("memos.origin", str(record.position).encode()),
        ("memos.group", group.encode()),
    )
    return OutgoingRecord(topic=DLQ, key=record.key, value=record.value, headers=headers)


class Runner:
    """Hosts one stage over a consumer group with bounded queues, retries, a DLQ and graceful shutdown."""

    def __init__(
        self,
        log: EventLog,
        stage: Stage,
        *,
        max_batch: int = 500,
        queue_size: int = 4,
        poll_timeout_s: float = 0.2,
        max_retries: int = 5,
        on_commit: CommitListener | None = None,
    ) -> None:
        self.log = log
        self.stage = stage
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.max_retries = max_retries
        self.on_commit = on_commit
        self._queue: asyncio.Queue[list[Record]] = asyncio.Queue(maxsize=queue_size)
        self._stopping = asyncio.Event()
        self._pending = 0
        """Batches handed to the queue and not yet committed (counted by the poller, so no race)."""
        self._last_idle_commit = 0.0
        self.idle_commit_interval_s = 2.0
        self.processed = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        """Ask the runner to finish the batch in flight, commit and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until ``stop()``; commits only what was fully processed."""
        await self.stage.start()
        consumer = self.log.consumer(self.stage.topics, group_id=self.stage.name, start_from=self.stage.start_from)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poll(consumer))
                group.create_task(self._process(consumer))
        finally:
            await consumer.aclose()
            await self.stage.aclose()

    async def _poll(self, consumer: Consumer) -> None:
        while not self._stopping.is_set():
            records = await consumer.poll(max_records=self.max_batch, timeout_s=self.poll_timeout_s)
            if not records:
                await self._idle_commit(consumer)
                continue
            self._pending += 1
            put = asyncio.ensure_future(self._queue.put(records))
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
            if put not in done:
                put.cancel()
                self._pending -= 1
            stop.cancel()

    async def _idle_commit(self, consumer: Consumer) -> None:
        """When nothing is queued or in flight, commit the consumer's positions.

        Positions can be ahead of the last processed record only by records that no longer exist
        (forgotten keys leave gaps); committing them lets watermark waits see the stage caught up.
        """
        now = time.monotonic()
        if self._pending or now - self._last_idle_commit < self.idle_commit_interval_s:
            return
        self._last_idle_commit = now
        await consumer.commit()
        if self.on_commit is not None:
            offsets: dict[TopicPartition, int] = {}
            for topic in self.stage.topics:
                for partition, offset in (await self.log.committed(self.stage.name, topic)).items():
                    offsets[(topic, partition)] = offset
            await self.on_commit(self.stage.name, offsets)

    async def _process(self, consumer: Consumer) -> None:
        while True:
            if self._stopping.is_set() and self._queue.empty():
                return
            try:
                records = await asyncio.wait_for(self._queue.get(), timeout=self.poll_timeout_s)
            except TimeoutError:
                continue
            await self._handle_records(records)
            offsets: dict[TopicPartition, int] = {}
            for record in records:
                tp = (record.position.topic, record.position.partition)
                offsets[tp] = max(offsets.get(tp, 0), record.position.offset + 1)
            await consumer.commit(offsets)
            self._pending -= 1
            self.processed += len(records)
            if self.on_commit is not None:
                await self.on_commit(self.stage.name, offsets)

    async def _handle_records(self, records: Sequence[Record]) -> None:
        envelopes: list[Envelope[AnyEvent]] = []
        dead: list[OutgoingRecord] = []
        for record in records:
            try:
                envelopes.append(Envelope(record.position, decode(record.value), record.headers))
            except EventDecodeError as exc:
                logger.warning("poison record sent to DLQ group=%s position=%s error=%s", self.stage.name,
                               record.position, exc)
                dead.append(dead_letter_record(record, exc, group=self.stage.name))
        if envelopes:
            produced = await self._handle_with_retries(envelopes, records, dead)
            if produced:
                await self.log.append_batch([event_record(e) for e in produced])
        if dead:
            await self.log.append_batch(dead)
            self.dead_lettered += len(dead)

    async def _handle_with_retries(
        self, envelopes: list[Envelope[AnyEvent]], records: Sequence[Record], dead: list[OutgoingRecord]
    ) -> list[Event]:
        try:
            return await self._retrying(envelopes)
        except Exception as exc:  # noqa: BLE001 - isolate the failing record, then dead-letter it
            if is_retryable(exc):
                raise
            logger.warning("batch failed group=%s size=%d error=%r; retrying one by one", self.stage.name,
                           len(envelopes), exc)
        by_position = {r.position: r for r in records}
        produced: list[Event] = []
        for envelope in envelopes:
            try:
                produced.extend(await self._retrying([envelope]))
            except Exception as exc:  # noqa: BLE001 - a failing record must not stop the partition
                if is_retryable(exc):
                    raise
                logger.warning("record sent to DLQ group=%s position=%s error=%r", self.stage.name,
                               envelope.position, exc)
                dead.append(dead_letter_record(by_position[envelope.position], exc, group=self.stage.name))
        return produced

    async def _retrying(self, envelopes: list[Envelope[AnyEvent]]) -> list[Event]:
        delay = 0.05
        for attempt in range(self.max_retries + 1):
            try:
                return await self.stage.handle(envelopes)
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.max_retries:
                    raise
                retry_after = getattr(exc, "retry_after", None)
                wait = float(retry_after) if retry_after else delay
                logger.warning("retryable error group=%s attempt=%d wait_s=%.2f error=%r", self.stage.name,
                               attempt + 1, wait, exc)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")
