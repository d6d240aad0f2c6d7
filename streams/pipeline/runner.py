"""The runner: poll -> decode -> process -> append produced events -> commit, with retries, a DLQ and
poison-record detection across crashes (``streams.pipeline.delivery``, shared with the faust app)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from schemas.envelope import Envelope, Record
from schemas.errors import PayloadTooLarge, StageStalled
from schemas.events import AnyEvent, Event
from streams.log.base import Consumer, EventLog, OutgoingRecord, StartFrom, TopicPartition, record_size
from streams.pipeline.delivery import dead_letter_record, deliver, event_record, fitted, poison_records
from streams.pipeline.fairness import FairSlots

__all__ = ["CommitListener", "Runner", "Stage", "dead_letter_record", "event_record", "still_working"]
# dead_letter_record and event_record live in streams.pipeline.delivery; re-exported for callers.

logger = logging.getLogger(__name__)

_TURN: contextvars.ContextVar[asyncio.Task[None] | None] = contextvars.ContextVar("memos_commit_turn", default=None)
"""The batch an overlapped batch commits after (its task), in that batch's own task."""
_PART: contextvars.ContextVar[dict[TopicPartition, int] | None] = contextvars.ContextVar("memos_part", default=None)
"""In a part of a split batch: {} for all parts but the last, which append their output and commit nothing; the
whole batch's offsets for the last, which commits them when handled whole (record by record: its own)."""
_RELEASE: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = contextvars.ContextVar(
    "memos_place_release", default=None)
"""Gives back an overlapped batch's fair place: before it waits for its turn, so no place waits on a batch."""


class _Abandoned(Exception):  # noqa: N818 - not an error: a batch left at a stop
    """An overlapped batch left unhandled at a stop (nothing counted or committed: redelivered after it); the
    batches after it, waiting for their turn, commit nothing either."""


_RUNNER: contextvars.ContextVar[Runner | None] = contextvars.ContextVar("memos_runner", default=None)
"""The runner whose tasks these are (``still_working``)."""


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets a consumer commits once ``records`` are done: past the last of them, per partition."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = (record.position.topic, record.position.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.position.offset + 1)
    return offsets


def still_working() -> None:
    """Called by a stage from within ``handle`` while a long batch makes progress (a step of a large add) or waits
    on another stage that does: its runner's stall watch (``stall_after_s``) starts again. No-op elsewhere."""
    runner = _RUNNER.get()
    if runner is not None:
        runner.progressed()


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
    exactly_once: bool = False
    """Append what a batch produced and commit its offsets in one transaction, where the log can
    (Kafka): a crash between the two can then neither lose the output nor write it twice."""
    overlap: int = 1
    """Batches one owner (``split``) has handled at once (1: one batch after another, unsplit); as many again
    stay for other owners. A batch waits for the earlier ones that share a key with it (order per key holds),
    appends its output as soon as it is done, and commits in turn, after every earlier batch has: so one slow
    key or owner does not hold back the others' output. Where the stage commits exactly once, a batch done out
    of turn waits for its turn to append too (one transaction)."""

    read_ahead: int = 1
    """Overlapped batches in flight per ``overlap``: more than 1 lets batches wait for a place in their own task, so
    one owner's queued batches never keep another owner's batch behind them from a free place (each holds its
    records in memory meanwhile)."""

    async def start(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Prepare resources. Idempotent."""

    async def admit(self, records: Sequence[Record]) -> None:  # noqa: B027 - optional hook with a no-op default
        """Called with every batch in log order, before it is handled: bookkeeping that must see each partition
        in order goes here, since overlapped batches are handled out of that order."""

    def split(self, records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
        """An overlapped batch as (owner, records) parts handled apart, each taking a fair place of its owner's
        (``FairSlots``). Parts must share no key (order per key). Default: one part, owned by no one."""
        return [("", list(records))]

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release resources. Idempotent."""

    @abstractmethod
    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        """Process a batch; return events to append. Raise a retryable error to have it retried."""


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
        max_attempts: int = 3,
        on_commit: CommitListener | None = None,
        group_id: str | None = None,
        stall_after_s: float = 0.0,
    ) -> None:
        self.log = log
        self.stage = stage
        self.group = group_id or stage.name
        """The consumer group: the stage's name, or that with a deployment's prefix."""
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.max_retries = max_retries
        self.max_attempts = max_attempts
        """Process deaths while a record was in flight before it is dead-lettered (0: never)."""
        self.on_commit = on_commit
        self._queue: asyncio.Queue[list[Record]] = asyncio.Queue(maxsize=queue_size)
        self._stopping = asyncio.Event()
        self._pending = 0
        """Batches handed to the queue and not yet committed (counted by the poller, so no race)."""
        self._flight: list[tuple[frozenset[bytes | None], asyncio.Task[None]]] = []
        """Overlapped batches not done yet: (their keys, their task), oldest first."""
        self._slots = FairSlots(2 * stage.overlap, per_owner=stage.overlap)
        """Places for overlapped batches while the stage handles them: ``overlap`` per owner, as many again kept
        for others, a freed one going to the owner holding fewest."""
        self._transactional = False
        """Whether the consumer appends and commits in one transaction (found at start)."""
        self._last_idle_commit = 0.0
        self.idle_commit_interval_s = 2.0
        self.processed = 0
        self.dead_lettered = 0
        self.stall_after_s = stall_after_s
        """With batches in flight, finishing none for this long fails the stage (``StageStalled``; 0: never)."""
        self._progress_at = time.monotonic()

    def stop(self) -> None:
        """Ask the runner to finish the batch in flight, commit and return."""
        self._stopping.set()

    def progressed(self) -> None:
        """Restart the stall watch's clock (a batch finished, or a stage said it is ``still_working``)."""
        self._progress_at = time.monotonic()

    async def run(self) -> None:
        """Run until ``stop()``; commits only what was fully processed."""
        hosting = _RUNNER.set(self)  # the tasks below (and the batches' tasks they start) inherit it
        await self.stage.start()
        consumer = self.log.consumer(self.stage.topics, group_id=self.group, start_from=self.stage.start_from)
        try:
            if self.stage.exactly_once:  # fence a crashed predecessor: abort the transaction it left open
                self._transactional = await consumer.commit_with([], {})
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poll(consumer))
                group.create_task(self._process(consumer))
                if self.stall_after_s > 0:
                    group.create_task(self._watch())
        except Exception as exc:  # the stage stops here: never silently (its host decides what follows)
            logger.critical("group=%s stopped on an error, nothing past its last commit was committed: %r",
                            self.group, exc, exc_info=exc)
            raise
        finally:
            await consumer.aclose()
            await self.stage.aclose()
            _RUNNER.reset(hosting)

    async def _poll(self, consumer: Consumer) -> None:
        while not self._stopping.is_set():
            polling = asyncio.ensure_future(consumer.poll(max_records=self.max_batch, timeout_s=self.poll_timeout_s))
            stopped = asyncio.ensure_future(self._stopping.wait())  # a poll that hangs (a broker's rebalance)
            try:
                await asyncio.wait({polling, stopped}, return_when=asyncio.FIRST_COMPLETED)  # never holds up a stop
            finally:
                stopped.cancel()
                if not polling.done():
                    polling.cancel()
                    await asyncio.gather(polling, return_exceptions=True)
            if polling.cancelled():
                return
            records = polling.result()
            if not records:
                await self._idle_commit(consumer)
                continue
            if not self._pending:  # work after a quiet spell: the stall clock starts now
                self.progressed()
            self._pending += 1
            put = asyncio.ensure_future(self._queue.put(records))
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
            if put not in done:
                put.cancel()
                self._pending -= 1
            stop.cancel()

    async def _watch(self) -> None:
        """Raise ``StageStalled`` once batches are in flight and none has finished for ``stall_after_s``."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):  # wakes on a stop at once
                await asyncio.wait_for(self._stopping.wait(), min(5.0, self.stall_after_s / 4))
            idle = time.monotonic() - self._progress_at
            if self._pending and not self._stopping.is_set() and idle > self.stall_after_s:
                raise StageStalled(f"group={self.group} finished no batch for {idle:.0f} s with {self._pending} in "
                                   f"flight (derivation.stall_after_s={self.stall_after_s:g}): stopping, so that its "
                                   "worker restarts and takes the batch record by record")

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
                for partition, offset in (await self.log.committed(self.group, topic)).items():
                    offsets[(topic, partition)] = offset
            await self.on_commit(self.group, offsets)

    async def _process(self, consumer: Consumer) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                self._check_flight()
                if self._queue.empty():
                    if self._stopping.is_set():  # batches being handled finish and commit; waiting ones are left
                        done = await asyncio.gather(*(task for _, task in self._flight), return_exceptions=True)
                        for outcome in done:
                            if isinstance(outcome, Exception) and not isinstance(outcome, _Abandoned):
                                raise outcome
                        return
                    get = asyncio.ensure_future(self._queue.get())
                    flight = [task for _, task in self._flight]  # one failing wakes this up
                    await asyncio.wait({get, stopping, *flight}, return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        continue
                    records = get.result()
                else:
                    records = self._queue.get_nowait()
                await self.stage.admit(records)
                if self.stage.overlap > 1:
                    await self._overlapped(consumer, records)
                    continue
                await self._handle_records(consumer, records)
                self._pending -= 1
                self.processed += len(records)
        finally:
            stopping.cancel()
            for _, task in self._flight:  # failing or cancelled: nothing more is committed
                task.cancel()
            await asyncio.gather(*(task for _, task in self._flight), return_exceptions=True)
            self._flight = []

    def _check_flight(self) -> None:
        """Forget the overlapped batches that are done; raise the error of one that failed (the runner stops
        before anything past it is committed)."""
        for _, task in self._flight:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                if isinstance(error, _Abandoned):
                    continue  # stopping: the stop path above ends the loop
                raise error
        self._flight = [(keys, task) for keys, task in self._flight if not task.done()]

    async def _overlapped(self, consumer: Consumer, records: list[Record]) -> None:
        """Start ``records`` as overlapped batches (the stage's parts of it; one where the stage commits exactly
        once, since each part would be a transaction of its own), while fewer than ``read_ahead`` x ``overlap``
        are in flight. Only the last part commits: every part waits for its turn, so none commits past one not done."""
        parts = self.stage.split(records) if not self._transactional else [("", records)]
        self._pending += len(parts) - 1
        whole = _next_offsets(records)
        for n, (owner, part) in enumerate(parts):
            while len(self._flight) >= self.stage.read_ahead * self.stage.overlap:
                await asyncio.wait([task for _, task in self._flight], return_when=asyncio.FIRST_COMPLETED)
                self._check_flight()
            keys = frozenset(record.key for record in part)
            after = [task for held, task in self._flight if held & keys]
            turn = self._flight[-1][1] if self._flight else None
            commits = None if len(parts) == 1 else whole if n == len(parts) - 1 else {}
            task = asyncio.create_task(self._one_batch(consumer, part, after, turn, owner, commits))
            self._flight.append((keys, task))

    async def _one_batch(self, consumer: Consumer, records: list[Record], after: list[asyncio.Task[None]],
                         turn: asyncio.Task[None] | None, owner: str,
                         commits: dict[TopicPartition, int] | None) -> None:
        """An overlapped batch: after the earlier batches of its keys, in a fair place of ``owner``'s while the
        stage handles it, committed after ``turn`` (``commits``: see ``_PART``)."""
        for task in after:
            await task  # an earlier batch of these keys failed: so does this one, uncommitted
        _TURN.set(turn)
        _PART.set(commits)
        async with contextlib.AsyncExitStack() as place:
            await place.enter_async_context(self._slots.held(owner))
            if self._stopping.is_set():  # before any attempt is counted
                raise _Abandoned(f"group={self.group}: a batch left at a stop")
            _RELEASE.set(place.aclose)
            await self._handle_records(consumer, records)
        self._pending -= 1
        self.processed += len(records)

    async def _handle_records(self, consumer: Consumer, records: Sequence[Record]) -> None:
        attempts = await self._suspect(consumer, records) if self.max_attempts else {}
        if any(n > 1 for n in attempts.values()):
            await self._one_by_one(consumer, records, attempts)
            return
        await self._deliver(consumer, records)

    async def _deliver(self, consumer: Consumer, records: Sequence[Record], *, whole: bool = True) -> None:
        delivered = await deliver(self.stage.handle, records, group=self.group, max_retries=self.max_retries)
        produced = [event_record(e) for e in delivered.produced]
        limit = self.log.max_record_bytes
        if limit and any(record_size(r) > limit for r in produced):  # found again record by record: dead-lettered
            delivered = await deliver(self._fitting, records, group=self.group, max_retries=self.max_retries)
            produced = [event_record(e) for e in delivered.produced]
        await self._finish(consumer, records, produced, delivered.dead, whole=whole)

    async def _fitting(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        """The stage's events for ``batch``; PayloadTooLarge (not retried: its input is dead-lettered) when one
        of them would be over the log's record limit, which would stop the stage at every try."""
        out = await self.stage.handle(batch)
        limit = self.log.max_record_bytes
        for event in out:
            if (size := record_size(event_record(event))) > limit:
                raise PayloadTooLarge(f"{type(event).__name__} derived from this record would be {size} bytes, over "
                                      f"the log's record limit ({limit}); the input stays on the log")
        return out

    async def _finish(self, consumer: Consumer, records: Sequence[Record], produced: Sequence[OutgoingRecord],
                      dead: Sequence[OutgoingRecord], *, whole: bool = True) -> None:
        """Append the output, then commit the input (in one transaction for exactly-once stages); ``whole``: the
        records are a whole batch (or part), not one of them handled on its own."""
        offsets = _next_offsets(records)
        limit = self.log.max_record_bytes
        out = [*produced, *(fitted(record, limit) for record in dead)]
        if (release := _RELEASE.get()) is not None:  # done with the stage: the place goes before any wait
            _RELEASE.set(None)
            await release()
        turn = _TURN.get()
        part = _PART.get()
        if part is not None and not part:  # a part of a split batch but its last: its output now, no offsets
            offsets = {}
        elif part and whole:  # the last part, handled whole: the batch's offsets (every other part is done)
            offsets = dict(part)
        if self._transactional:
            if turn is not None:
                await turn
            if await consumer.commit_with(out, offsets):
                out = []
                offsets = {}
        if out:
            await self.log.append_batch(out)
        if turn is not None:
            await turn  # an overlapped batch commits after every earlier one: never past one not done
        if offsets:
            await consumer.commit(offsets)
        self.dead_lettered += len(dead)
        self.progressed()
        if self.on_commit is not None:
            await self.on_commit(self.group, offsets)

    async def _suspect(self, consumer: Consumer, records: Sequence[Record]) -> dict[tuple[str, int, int], int]:
        """Count an attempt at the first record of each partition in the batch (durably, before any work);
        returns the counts: one over 1 means it was being processed before (the process died, or lost the
        partition)."""
        firsts: dict[TopicPartition, int] = {}
        for record in records:
            firsts.setdefault((record.position.topic, record.position.partition), record.position.offset)
        return {(topic, partition, offset): await consumer.record_attempt(topic, partition, offset)
                for (topic, partition), offset in firsts.items()}

    async def _one_by_one(self, consumer: Consumer, records: Sequence[Record],
                          counted: dict[tuple[str, int, int], int]) -> None:
        """After a crash: each record on its own, counted and committed, so the one that kills the
        process is found; past ``max_attempts`` it is dead-lettered with the reason instead of run."""
        logger.warning("group=%s resumes after an unfinished batch: records one by one", self.group)
        for record in records:
            p = record.position
            attempts = counted.pop((p.topic, p.partition, p.offset), None)
            if attempts is None:
                attempts = await consumer.record_attempt(p.topic, p.partition, p.offset)
            if attempts > self.max_attempts:
                dead, failed = poison_records(record, attempts - 1, group=self.group)
                logger.error("poison record sent to DLQ group=%s position=%s attempts=%d", self.group, p,
                             attempts - 1)
                await self._finish(consumer, [record], failed, [dead], whole=False)
            else:
                await self._deliver(consumer, [record], whole=False)
