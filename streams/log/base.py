"""The EventLog port: topics, partitions, offsets, consumer groups; adapters keep Kafka semantics."""

from __future__ import annotations

import logging
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from schemas.envelope import Header, Position, Record
from schemas.errors import ConfigError, PayloadTooLarge, TransportError

__all__ = [
    "Consumer",
    "EventLog",
    "OutgoingRecord",
    "StartFrom",
    "TopicPartition",
    "check_record",
    "check_topic",
    "partition_for",
]

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
StartFrom = Literal["committed", "earliest", "latest"]


def partition_for(key: bytes | None, partitions: int) -> int:
    """Partition of a key: CRC32 of the key bytes modulo the partition count (None -> 0).

    Both adapters use this same function, so a key lands on the same partition number on either log.
    """
    if key is None or partitions <= 1:
        return 0
    return zlib.crc32(key) % partitions


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to append: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...] = ()


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_topic(topic: str) -> None:
    """Refuse a topic name Kafka would refuse (ConfigError), on every log alike."""
    if not _TOPIC.match(topic):
        raise ConfigError(f"invalid topic name {topic!r}: use 1-249 characters of [A-Za-z0-9._-]")


def record_size(record: OutgoingRecord) -> int:
    """The bytes a record counts against ``max_record_bytes``: value, key and headers."""
    return len(record.value) + len(record.key or b"") + sum(len(n) + len(v) for n, v in record.headers)


def check_record(record: OutgoingRecord, max_record_bytes: int) -> None:
    """Refuse a bad topic (ConfigError) or a record over ``max_record_bytes`` (PayloadTooLarge), before
    anything of its batch is appended."""
    check_topic(record.topic)
    size = record_size(record)
    if size > max_record_bytes:
        raise PayloadTooLarge(
            f"record of {size} bytes for topic {record.topic!r} exceeds max_record_bytes={max_record_bytes}"
        )


class Consumer(ABC):
    """A consumer (optionally in a group) over one or more topics.

    In a group, partitions are spread over the group's live members; a member that stops is replaced by
    the others (rebalance). Reading starts at the group's committed offset, else at ``start_from``.
    """

    @abstractmethod
    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records in offset order per partition; [] after ``timeout_s``.

        Records not yet committed are delivered again after a restart or a rebalance (at-least-once).
        Raises BrokerUnavailable when the log cannot be reached.
        """

    @abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit, per partition, the offset of the next record to read (last processed + 1).

        With no argument, commits the positions after the last records returned by ``poll``.
        Idempotent; committing a lower offset than the committed one moves the group back.
        """

    async def commit_with(self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]) -> bool:
        """Append ``records`` and commit ``offsets`` atomically (one transaction) where the log supports
        it, and return True; False (nothing done) where it does not: the caller appends, then commits.
        With nothing to append or commit it prepares the transactions (fencing a crashed predecessor)."""
        return False

    async def record_attempt(self, topic: str, partition: int, offset: int) -> int:
        """Durably count one more attempt at processing the group's record at ``offset``; returns the count.

        Kept with the group's committed offsets, so it survives the process: a record that was being
        processed each time the process died is recognised on restart. 0 where the adapter keeps no
        count (then poison records are not recognised).
        """
        return 0

    @abstractmethod
    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make the next poll of that partition start at ``offset``."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Partitions this consumer currently reads."""

    @abstractmethod
    async def aclose(self) -> None:
        """Leave the group (triggering a rebalance) and release resources. Does not commit."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class EventLog(ABC):
    """An ordered, partitioned, durable log of records (Kafka semantics)."""

    forgets: bool = True
    """Whether ``forget_key`` and ``forget_positions`` can delete records (Kafka cannot: a forget is refused
    before anything is recorded)."""
    max_record_bytes: int = 0
    """The largest record the log takes, as ``record_size`` counts it (0: no limit; the adapters set theirs)."""

    @abstractmethod
    async def start(self) -> None:
        """Open connections or files. Idempotent. Raises BrokerUnavailable."""

    @abstractmethod
    async def aclose(self) -> None:
        """Flush and close. Idempotent."""

    @abstractmethod
    async def create_topic(self, topic: str, *, partitions: int) -> None:
        """Create a topic with that many partitions; no-op when it exists (its partition count stays)."""

    @abstractmethod
    async def partitions(self, topic: str) -> int:
        """Partition count of a topic; 0 when the topic does not exist."""

    @abstractmethod
    async def append(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> Position:
        """Append one record; returns only once the record is durable (acks=all / fsync policy).

        The partition is ``partition_for(key, partitions)``; offsets grow by one per partition.
        Creates the topic with the default partition count when it does not exist.
        """

    @abstractmethod
    async def append_batch(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Append several records, durable together on return; positions in input order.

        Per-key order follows input order. On failure no record of the batch is acknowledged.
        """

    @abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get (high watermark)."""

    @abstractmethod
    async def committed(self, group_id: str, topic: str) -> dict[int, int]:
        """Per partition, the group's committed offset (absent partitions have none)."""

    @abstractmethod
    async def read(self, topic: str, partition: int, offset: int, *, limit: int = 500) -> list[Record]:
        """Read records of one partition from ``offset`` without any group (for replay and feeds)."""

    async def read_key(
        self, topic: str, partition: int, key: bytes, offset: int, end: int, *, limit: int = 500
    ) -> tuple[list[tuple[int, bytes]], int]:
        """(offset, value) of the records of ``key`` at offsets in [``offset``, ``end``) of one partition, at
        most ``limit`` of them, and the offset to read on from (``end`` once none is left).

        A replay's read: one cube's values, nothing else built. This default reads ``limit`` records at a
        time through ``read`` and keeps the key's; the embedded log selects them in SQL.
        """
        out: list[tuple[int, bytes]] = []
        while offset < end:
            records = await self.read(topic, partition, offset, limit=limit)
            if not records:
                break
            for record in records:
                at = record.position.offset
                if at >= end:
                    return out, end
                offset = at + 1
                if record.key == key:
                    out.append((at, record.value))
                    if len(out) == limit:
                        return out, min(offset, end)
        return out, end

    @abstractmethod
    async def forget_key(self, topic: str, key: bytes) -> int:
        """Make every record of ``key`` on ``topic`` unreadable; returns how many were removed.

        The embedded log deletes the rows. Kafka cannot delete single records: its adapter raises
        TransportError unless the deployment uses per-key encryption (see infra/README.md).
        """

    async def forget_positions(self, topic: str, positions: Sequence[Position]) -> int:
        """Make the records at these positions of ``topic`` unreadable; returns how many were removed.

        Like ``forget_key``, for one user's records among a cube's (offsets are never reused). Adapters
        that cannot delete single records raise TransportError.
        """
        raise TransportError(f"this log cannot delete single records of topic {topic!r}")

    async def group_processes(self, group_id: str) -> list[tuple[str, int]] | None:
        """(host, pid) of the processes with a live member in a consumer group, where the log knows them
        (the embedded log does); None where it does not (Kafka keeps members by client id only)."""
        return None

    @abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str | None = None,
        start_from: StartFrom = "committed",
    ) -> Consumer:
        """A consumer over ``topics``; with ``group_id`` it joins that group and reads its commits.

        ``start_from='committed'`` resumes at the group's commits, else the earliest offset;
        'earliest' and 'latest' apply where no commit exists (and always when there is no group).
        """

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
