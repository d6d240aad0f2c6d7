"""Delivery, shared by both stage hosts (our runner and the faust app): decode, retry with backoff,
isolate a failing record, dead-letter it with the reason, and count attempts across crashes.

Retryable errors (``schemas.errors.is_retryable``) are retried with exponential backoff (or the error's
``retry_after``) up to ``max_retries``; a retryable error that outlives them propagates (the host stops
without committing). A non-retryable failure of a batch is retried record by record, so only the
records that fail on their own go to ``memos.dlq.v1``; the rest of the batch goes on. A record that killed
the process ``MAX_ATTEMPTS`` times is dead-lettered with ``poison_error`` instead of run again: the runner
counts attempts in its consumer's commit metadata, the faust worker (whose consumer faust owns) in an
:class:`AttemptStore`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from schemas.codec import decode, encode
from schemas.envelope import Envelope, Header, Position, Record
from schemas.errors import EventDecodeError, ProcessingError, is_retryable
from schemas.events import AnyEvent, ConversationRecorded, Event, TaskStatusChanged, TaskSubmitted, derive_id
from schemas.topics import DLQ
from streams.log.base import OutgoingRecord, record_size

__all__ = [
    "MAX_ATTEMPTS",
    "AttemptStore",
    "Delivered",
    "Handler",
    "dead_letter_record",
    "deliver",
    "failed_task",
    "event_record",
    "fitted",
    "poison_error",
    "poison_records",
    "retrying",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 3
"""Deaths of the process on one record before it is dead-lettered instead of run again."""

Handler = Callable[[Sequence[Envelope[AnyEvent]]], Awaitable[list[Event]]]
"""A stage's ``handle``: decoded envelopes in -> events to append out."""


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


def failed_task(event: AnyEvent, error: BaseException, *, group: str) -> list[Event]:
    """The task of a dead-lettered add or submitted task, failed with the reason: left waiting, a sync add
    answered "added" with no memories and a client following the task waited for ever. Other events: []."""
    if isinstance(event, ConversationRecorded) and event.task_id:
        label, what = "add", "deriving the add"
    elif isinstance(event, TaskSubmitted):
        label, what = event.label, f"the {event.label} task"
    else:
        return []
    return [TaskStatusChanged(
        event_id=derive_id(event.event_id, f"status:failed:{group}"), occurred_at=event.occurred_at, key=event.key,
        producer=group, trace_id=event.trace_id, task_id=event.task_id, cube_id=event.cube_id, status="failed",
        label=label, error=f"{what} failed ({type(error).__name__}: {error})"[:2000],
        result={"dead_lettered": True, "group": group},
    )]


def poison_records(record: Record, attempts: int, *, group: str) -> tuple[OutgoingRecord, list[OutgoingRecord]]:
    """A record that was being processed whenever the worker died, ``attempts`` times: its DLQ copy (with
    ``poison_error``), and its task failed (``failed_task``) as records to append; both hosts dead-letter so."""
    error = poison_error(record, attempts)
    try:
        failed = failed_task(decode(record.value), error, group=group)
    except EventDecodeError:
        failed = []
    return dead_letter_record(record, error, group=group), [event_record(e) for e in failed]


def fitted(record: OutgoingRecord, max_record_bytes: int) -> OutgoingRecord:
    """A DLQ record within the log's record limit: past it, the copy of the value is left out (the original
    stays on its own topic, at ``memos.origin``) and the header ``memos.value_left_out`` gives its size."""
    if not max_record_bytes or record_size(record) <= max_record_bytes:
        return record
    headers = tuple((name, value[:2000]) for name, value in record.headers)
    return OutgoingRecord(topic=record.topic, key=record.key, value=b"",
                          headers=(*headers, ("memos.value_left_out", str(len(record.value)).encode())))


async def retrying(call: Callable[[], Awaitable[T]], *, max_retries: int, where: str) -> T:
    """``await call()``, retrying retryable errors with exponential backoff (50 ms doubling to 2 s, or the
    error's ``retry_after``); re-raises the last error after ``max_retries`` retries or at once when
    the error is not retryable."""
    delay = 0.05
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except Exception as exc:
            if not is_retryable(exc) or attempt == max_retries:
                raise
            retry_after = getattr(exc, "retry_after", None)
            wait = float(retry_after) if retry_after else delay
            logger.warning("retryable error %s attempt=%d wait_s=%.2f error=%r", where, attempt + 1, wait, exc)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


@dataclass(slots=True)
class Delivered:
    """What processing some records gave: events to append and DLQ records to append."""

    produced: list[Event] = field(default_factory=list)
    dead: list[OutgoingRecord] = field(default_factory=list)


def _one(handle: Handler, envelope: Envelope[AnyEvent]) -> Callable[[], Awaitable[list[Event]]]:
    async def call() -> list[Event]:
        return await handle([envelope])

    return call


def poison_error(record: Record, attempts: int) -> ProcessingError:
    """Why a record that was being processed whenever the process died is dead-lettered."""
    return ProcessingError(
        f"record {record.position} was being processed when the worker died, {attempts} times; "
        "dead-lettered without another try"
    )


class AttemptStore:
    """Durable in-flight attempts per (group, topic, partition, offset), for a host that cannot keep them
    with its committed offsets: ``begin`` counts an attempt before a record is processed, ``clear`` forgets
    it once the record is acknowledged, so a count above 1 at ``begin`` means the process died on it.

    SQLite in WAL mode with ``synchronous=NORMAL``: each count is on disk (in the OS) when ``begin``
    returns, which a SIGKILL or an OOM kill cannot undo (a power loss may lose the last counts: the
    record is then run again once more). The file is per process host; a restarted worker finds its
    counts when it gets the same partitions back, as it does when it restarts with the same worker id.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS attempts (grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
            " off INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (grp, topic, part, off))"
        )

    def begin(self, group: str, position: Position) -> int:
        """Count one attempt at ``position`` (durably, before any work); the attempts so far, this one included."""
        key = (group, position.topic, position.partition, position.offset)
        row = self._conn.execute(
            "INSERT INTO attempts VALUES (?, ?, ?, ?, 1) ON CONFLICT (grp, topic, part, off) DO UPDATE SET"
            " n = n + 1 RETURNING n", key,
        ).fetchone()
        return int(row[0])

    def clear(self, group: str, position: Position) -> None:
        """Forget ``position``: it was processed (or dead-lettered) and acknowledged."""
        self._conn.execute("DELETE FROM attempts WHERE grp = ? AND topic = ? AND part = ? AND off = ?",
                           (group, position.topic, position.partition, position.offset))

    def in_flight(self) -> dict[tuple[str, str, int, int], int]:
        """Every counted, not yet cleared position and its attempts."""
        return {(g, t, p, o): n for g, t, p, o, n in self._conn.execute("SELECT grp, topic, part, off, n FROM attempts")}

    def close(self) -> None:
        """Close the file."""
        self._conn.close()


async def deliver(handle: Handler, records: Sequence[Record], *, group: str, max_retries: int) -> Delivered:
    """Decode ``records`` and hand them to ``handle`` as one batch, with retries; a batch that fails for
    good is retried record by record and only the failing records are dead-lettered.

    Raises only a retryable error that outlived ``max_retries`` (nothing may be committed then).
    """
    out = Delivered()
    envelopes: list[Envelope[AnyEvent]] = []
    for record in records:
        try:
            envelopes.append(Envelope(record.position, decode(record.value), record.headers))
        except EventDecodeError as exc:
            logger.warning("poison record sent to DLQ group=%s position=%s error=%s", group, record.position, exc)
            out.dead.append(dead_letter_record(record, exc, group=group))
    if not envelopes:
        return out
    where = f"group={group}"
    try:
        out.produced = await retrying(lambda: handle(envelopes), max_retries=max_retries, where=where)
        return out
    except Exception as exc:  # noqa: BLE001 - isolate the failing record, then dead-letter it
        if is_retryable(exc):
            raise
        if len(envelopes) == 1:
            failed: Exception | None = exc
        else:
            failed = None
            logger.warning("batch failed group=%s size=%d error=%r; retrying one by one", group,
                           len(envelopes), exc)
    by_position = {r.position: r for r in records}
    for envelope in envelopes:
        error = failed
        if error is None:
            try:
                out.produced.extend(await retrying(_one(handle, envelope), max_retries=max_retries,
                                                   where=f"{where} position={envelope.position}"))
                continue
            except Exception as exc:  # noqa: BLE001 - a failing record must not stop the partition
                if is_retryable(exc):
                    raise
                error = exc
        logger.warning("record sent to DLQ group=%s position=%s error=%r", group, envelope.position, error)
        out.dead.append(dead_letter_record(by_position[envelope.position], error, group=group))
        out.produced.extend(failed_task(envelope.event, error, group=group))
    return out
