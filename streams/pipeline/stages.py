"""The stages the runtime hosts: derivation, projection, control-plane projection and task dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memory_store.base import Projection
from memory_store.control.base import FINISHED, ControlStore
from processors.projection import project
from schemas.codec import decode
from schemas.envelope import Envelope, Position, Record
from schemas.errors import EventDecodeError
from schemas.events import (
    AnyEvent,
    ConversationRecorded,
    DerivationFailed,
    Event,
    MemoryAdded,
    MemoryRetired,
    MemoryRevised,
    TaskStatusChanged,
    TaskSubmitted,
    derive_id,
)
from schemas.ops import AnyOp
from schemas.topics import CONVERSATIONS, REGISTRY, STAGE_READS
from streams.log.base import EventLog, TopicPartition
from streams.pipeline.runner import Stage, still_working

if TYPE_CHECKING:
    from streams.pipeline.derivation import Deriver, Phase, Progress

__all__ = ["ControlStage", "DerivationStage", "DispatchStage", "LargeAddsBehind", "ProjectionStage", "TaskHandler",
           "WaitFor", "any_large_add", "is_large_add", "is_large_messages"]

logger = logging.getLogger(__name__)

TaskHandler = Callable[[list[TaskSubmitted]], Awaitable[dict[str, Any] | None]]
"""Runs a batch of tasks of one (user, cube, label); returns a result summary (or None).

Raising marks every task of the batch failed."""
Emit = Callable[[Sequence[Event]], Awaitable[object]]
"""Appends events to the log (the runtime's ``publish``)."""
WaitFor = Callable[[str, Mapping[TopicPartition, int]], Awaitable[None]]
"""``async (stage name, {(topic, partition): offset})``: returns once that stage committed past the offsets."""
PendingLarge = Callable[[str, TopicPartition, int], Awaitable[Mapping[str, int]]]
"""``async (large lane's stage name, (topic, partition), before)``: cube -> the offset just past that cube's
latest large add below ``before`` that the large lane has not committed past yet."""


def _status(source: Event, *, task_id: str, cube_id: str, status: str, label: str, key: str,
            business_task_id: str | None = None, error: str | None = None,
            result: dict[str, Any] | None = None) -> TaskStatusChanged:
    return TaskStatusChanged(
        event_id=derive_id(source.event_id, f"status:{status}"),
        occurred_at=source.occurred_at,
        key=key,
        producer="deriver",
        trace_id=source.trace_id,
        task_id=task_id,
        cube_id=cube_id,
        status=status,  # type: ignore[arg-type]
        label=label,
        business_task_id=business_task_id,
        error=error,
        result=result or {},
    )


def is_large_add(event: ConversationRecorded, large_chars: int, *, chars: int | None = None) -> bool:
    """Whether an add goes to the lane of large adds: its messages are over ``large_chars`` JSON characters
    (``chars``: their count, when the caller has it), or it carries a file (fetched and parsed in the sandbox:
    seconds, where a text add takes milliseconds)."""
    return is_large_messages(event.messages, large_chars, chars=chars)


def is_large_messages(messages: object, large_chars: int, *, chars: int | None = None) -> bool:
    """``is_large_add`` for an add's messages."""
    if large_chars <= 0:
        return False
    if _carries_file(messages):
        return True
    return (len(json.dumps(messages, ensure_ascii=False, default=str)) if chars is None else chars) > large_chars


def _carries_file(messages: object) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "file" for p in content):
            return True
    return False


async def any_large_add(log: EventLog, positions: Sequence[Position], large_chars: int) -> bool:
    """Whether an add among ``positions`` (read back from the log) goes to the lane of large adds."""
    for p in positions:
        if p.topic == CONVERSATIONS and large_chars > 0:
            for record in await log.read(p.topic, p.partition, p.offset, limit=1):
                event = decode(record.value)
                if isinstance(event, ConversationRecorded) and is_large_add(event, large_chars):
                    return True
    return False


class LargeAddsBehind:
    """The large adds a lane has not passed yet, as the log tells them (a ``PendingLarge``).

    A small lane learns of its cubes' large adds as it skips them; after a restart or a rebalance it
    resumes past the ones it skipped before, while the large lane may still be behind them. This reads
    the log between the large lane's committed offset and where the small lane resumes, so a small add
    still waits for its cube's earlier large add (order per cube survives restarts).
    """

    def __init__(self, log: EventLog, group: Callable[[str], str], large_chars: int, *, page: int = 32) -> None:
        self.log = log
        self.group = group
        """Stage name -> its consumer group (the runtime's ``group``: the deployment's prefix added)."""
        self.large_chars = large_chars
        self.page = page
        """Records read at a time (each up to the log's record limit, 1 MiB)."""

    async def __call__(self, lane: str, tp: TopicPartition, before: int) -> dict[str, int]:
        topic, partition = tp
        offset = (await self.log.committed(self.group(lane), topic)).get(partition, 0)
        out: dict[str, int] = {}
        while offset < before:
            records = await self.log.read(topic, partition, offset, limit=min(self.page, before - offset))
            if not records:
                break
            for record in records:
                if record.position.offset >= before:
                    break
                try:
                    event = decode(record.value)
                except EventDecodeError:
                    continue  # a poison record: no lane derives it
                if isinstance(event, ConversationRecorded) and is_large_add(event, self.large_chars):
                    out[event.cube_id] = record.position.offset + 1
            offset = records[-1].position.offset + 1
        return out


WAIT_BEAT_S = 60.0
"""How often a small add waiting for its cube's large add tells its runner it is still working."""
HEAVY_BYTES = 32_768
"""A user's adds in one small-lane batch from which they are handled apart (about a second of derivation here)."""


class DerivationStage(Stage):
    """ConversationRecorded -> memory events (fast, rules or LLM) and the add task's final status.

    ``phase='first'`` handles sync adds entirely and the fast part of async fine adds; the 'refine'
    phase (another group) runs fine extraction for async fine adds and retires the fast memories.

    Lanes keep one huge add from stalling everyone's small ones: with ``large_chars``, the 'small' lane
    (group ``deriver``/``refiner``) skips adds whose messages are longer, and the 'large' lane (its own group,
    ``deriver-large``/``refiner-large``, running beside it) derives only those. Order per cube holds: a small
    add that follows a large one of the same cube waits (``wait_for``) until the large lane has passed it,
    also after a restart or a rebalance: where a small lane's batch does not continue where it left off,
    ``pending_large`` reads from the log the large adds it skipped before that the large lane has not passed.
    """

    topics = STAGE_READS["deriver"]  # every lane and phase reads the same topic
    exactly_once = True  # over Kafka: derived events and the input offsets commit in one transaction

    def __init__(self, deriver: Deriver, *, phase: str = "first", emit: Emit | None = None,
                 progress_steps: int = 10, lane: str = "all", large_chars: int = 0,
                 wait_for: WaitFor | None = None, pending_large: PendingLarge | None = None,
                 overlap: int = 1) -> None:
        self.deriver = deriver
        self.overlap = overlap
        """Batches derived at once (``Stage.overlap``): one tenant's files or long adds hold no other's back."""
        self.read_ahead = 4 if lane == "small" else 1
        """The small lane splits its batches by user: their parts wait for a fair place in their own tasks."""
        self.phase = phase
        base = "deriver" if phase == "first" else "refiner"
        self.name = f"{base}-large" if lane == "large" else base
        self.lane = lane
        """'all' (every add), 'small' (adds up to ``large_chars`` characters) or 'large' (the longer ones)."""
        self.large_chars = large_chars
        self.wait_for = wait_for
        self._large_lane = f"{base}-large"
        self._large_before: dict[str, dict[TopicPartition, int]] = {}
        """Small lane: cube -> the offsets just past that cube's latest large add seen here (per partition)."""
        self.pending_large = pending_large
        self._next: dict[TopicPartition, int] = {}
        """Small lane: the offset after the last record handled here, per partition."""
        self._admitted = False
        """Whether a runner admits batches in log order (``admit``); otherwise ``handle`` sees them in order."""
        self.emit = emit
        """Appends the progress of large adds to their task status (None: progress stays in the final status)."""
        self.progress_steps = progress_steps
        """Progress statuses per step of a large add at most (one per tenth by default): deterministic, so a
        redelivered add republishes the same events (same ids)."""
        self._published: dict[str, tuple[str, int]] = {}
        self._last: dict[str, Progress] = {}

    def _phase_for(self, event: ConversationRecorded) -> Phase | None:
        refine_later = event.mode == "fine" and event.async_mode == "async"
        if self.phase == "first":
            return "fast" if refine_later or event.mode == "fast" else "fine"
        return "fine" if refine_later else None

    async def _in_lane(self, envelope: Envelope[AnyEvent], event: ConversationRecorded) -> bool:
        """Whether this lane derives ``event``; the small lane first waits for the cube's earlier large adds."""
        if self.lane == "all":
            return True
        large = is_large_add(event, self.large_chars)
        if self.lane == "large":
            return large
        if large:
            tp = (envelope.position.topic, envelope.position.partition)
            self._large_before.setdefault(event.cube_id, {})[tp] = envelope.position.offset + 1
            return False
        waiting = self._large_before.pop(event.cube_id, None)
        if waiting and self.wait_for is not None:
            logger.info("small add of cube=%s waits for the cube's large add (order per cube)", event.cube_id)
            wait = asyncio.ensure_future(self.wait_for(self._large_lane, waiting))
            try:
                while not wait.done():  # waiting on a lane that works (its own watch sees it stall): not stalled
                    still_working()
                    await asyncio.wait({wait}, timeout=WAIT_BEAT_S)
            finally:
                wait.cancel()
            wait.result()
        return True

    async def admit(self, records: Sequence[Record]) -> None:
        self._admitted = True
        if self.lane == "small":
            await self._resume([record.position for record in records])

    def split(self, records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
        """Small lane: each user with ``HEAVY_BYTES`` or more of adds in the batch gets a part of their own, the
        others share one, handled first: a user's long adds take that user's fair places and hold back no one
        else's. One part where two parts would share a cube (its adds stay in log order)."""
        if self.lane != "small":
            return [("", list(records))]
        users: dict[str, list[Record]] = {}
        for record in records:
            try:
                event = decode(record.value)
            except EventDecodeError:
                user = ""  # a poison record: no owner
            else:
                user = event.user_id if isinstance(event, ConversationRecorded) else ""
            users.setdefault(user, []).append(record)
        size = {u: sum(len(r.value) for r in rs) for u, rs in users.items()}
        heavy = {u: rs for u, rs in users.items() if u and size[u] >= HEAVY_BYTES}
        light = [r for u, rs in users.items() if u not in heavy for r in rs]
        parts = ([("", light)] if light else []) + sorted(heavy.items(), key=lambda p: size[p[0]])
        keys = [{r.key for r in rs} for _, rs in parts]
        if len(parts) > 1 and sum(map(len, keys)) != len(set().union(*keys)):
            return [("", list(records))]
        return parts

    async def _resume(self, positions: Sequence[Position]) -> None:
        """Small lane: where a partition does not continue where this lane left off (a restart, a rebalance,
        a redelivery), learn from the log the cubes' large adds skipped before that the large lane has not passed.
        Positions come in log order: from ``admit`` where a runner hosts the stage, from ``handle`` otherwise."""
        if self.large_chars <= 0 or self.pending_large is None:
            return
        for position in positions:
            tp = (position.topic, position.partition)
            if self._next.get(tp) != position.offset:
                pending = await self.pending_large(self._large_lane, tp, position.offset)
                for cube, past in pending.items():
                    marks = self._large_before.setdefault(cube, {})
                    marks[tp] = max(marks.get(tp, 0), past)
            self._next[tp] = position.offset + 1

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        if self.lane == "small" and not self._admitted:
            await self._resume([envelope.position for envelope in batch])
        by_phase: dict[Phase, list[ConversationRecorded]] = {}
        for envelope in batch:
            event = envelope.event
            if isinstance(event, ConversationRecorded):
                phase = self._phase_for(event)
                if phase is not None and await self._in_lane(envelope, event):
                    by_phase.setdefault(phase, []).append(event)
        out: list[Event] = []
        for phase, events in by_phase.items():
            try:
                derived_all = await self.deriver.derive_many(events, phase=phase, progress=self._progress)
                for event, derived in zip(events, derived_all, strict=True):
                    out.extend(derived)
                    out.append(self._task_status(event, derived, phase))
            finally:
                for event in events:
                    self._published.pop(event.task_id, None)
                    self._last.pop(event.task_id, None)
        return out

    async def _progress(self, event: ConversationRecorded, progress: Progress) -> None:
        """Publish a large add's progress as an 'in_progress' status (at most one per interval and step)."""
        still_working()
        self._last[event.task_id] = progress
        if self.emit is None or progress.total <= self.deriver.settings.slice_size or progress.step == "done":
            return
        tick = progress.done * max(1, self.progress_steps) // progress.total
        if self._published.get(event.task_id) == (progress.step, tick):
            return
        self._published[event.task_id] = (progress.step, tick)
        status = _status(event, task_id=event.task_id, cube_id=event.cube_id, status="in_progress", label="add",
                         key=event.key, result={"phase": self.phase, "progress": _progress_view(progress)})
        status = status.model_copy(update={"event_id": derive_id(
            event.event_id, f"progress:{self.phase}:{progress.step}:{progress.done}")})
        await self.emit([status])

    def _task_status(self, event: ConversationRecorded, derived: list[Event], phase: str) -> TaskStatusChanged:
        final = self.phase == "refine" or not (event.mode == "fine" and event.async_mode == "async")
        errors = [e.error for e in derived if isinstance(e, DerivationFailed)]
        result: dict[str, Any] = {
            "memory_ids": [e.memory_id for e in derived if isinstance(e, MemoryAdded)],
            "revised_ids": [e.memory_id for e in derived if isinstance(e, MemoryRevised)],
            "retired_ids": [e.memory_id for e in derived if isinstance(e, MemoryRetired)],
            "phase": phase,
            "errors": errors,
        }
        last = self._last.get(event.task_id)
        if last is not None:
            result["progress"] = _progress_view(last)
        return _status(event, task_id=event.task_id, cube_id=event.cube_id,
                       status="completed" if final else "in_progress", label="add", key=event.key,
                       result=result, error="; ".join(errors) or None)


def _progress_view(progress: Progress) -> dict[str, Any]:
    return {"step": progress.step, "done": progress.done, "total": progress.total}


class ProjectionStage(Stage):
    """Memory events -> ops (pure ``project``) -> every projection store, one transaction per batch."""

    name = "projector"
    topics = STAGE_READS[name]

    def __init__(self, stores: Sequence[Projection]) -> None:
        self.stores = list(stores)
        self.lock = asyncio.Lock()
        """Held while applying; replay takes it to pause the live projection."""

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        planned: list[tuple[Sequence[AnyOp], Position]] = [(project(e.event), e.position) for e in batch]
        async with self.lock:
            await apply_planned(self.stores, planned, replay=False)
        return []


def database_of(store: Projection) -> str:
    """What stores writing the same database share (their URL); a store without one has its own."""
    return str(getattr(store, "url", id(store)))


async def apply_planned(stores: Sequence[Projection], planned: Sequence[tuple[Sequence[AnyOp], Position]],
                        *, replay: bool) -> None:
    """Apply (ops, position) pairs to every store, batched where the store supports ``apply_many``: stores
    writing different databases at the same time (their engines' work runs side by side), those sharing one
    in turn. Every group runs to its end even when another fails, then the first failure is raised (each
    store's checkpoint records what it applied, so a retry of the batch skips that)."""
    groups: dict[str, list[Projection]] = {}
    for store in stores:
        groups.setdefault(database_of(store), []).append(store)
    if len(groups) <= 1:
        await _apply_in_turn(stores, planned, replay=replay)
        return
    results = await asyncio.gather(*(_apply_in_turn(group, planned, replay=replay) for group in groups.values()),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _apply_in_turn(stores: Sequence[Projection], planned: Sequence[tuple[Sequence[AnyOp], Position]],
                         *, replay: bool) -> None:
    """Apply (ops, position) pairs to ``stores`` one after another (stores sharing one database)."""
    for store in stores:
        apply_many = getattr(store, "apply_many", None)
        if apply_many is not None:
            await apply_many(planned, replay=replay)
        else:
            for ops, position in planned:
                await store.apply(ops, position, replay=replay)


class ControlStage(Stage):
    """Registry and task events -> the control store (access rules, task status): its one writer."""

    name = "control"
    topics = STAGE_READS[name]

    def __init__(self, control: ControlStore) -> None:
        self.control = control
        self.registry_version = 0
        """Bumped after each batch with registry records is applied (access answers cached under it expire)."""
        self._applied = asyncio.Event()

    async def finished(self, task_ids: Sequence[str]) -> None:
        """Until every one of these tasks has a final status in the control store (as this stage applies it)."""
        for task_id in task_ids:
            while True:
                applied = self._applied  # taken before the read: a batch applied meanwhile sets it
                if (task := await self.control.task(task_id)) is not None and task.status in FINISHED:
                    break
                await applied.wait()

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        try:
            await self.control.apply([(envelope.event, envelope.position) for envelope in batch])
        finally:  # also when the apply failed part-way: whatever it wrote is seen
            if any(envelope.position.topic == REGISTRY for envelope in batch):
                self.registry_version += 1
            applied, self._applied = self._applied, asyncio.Event()
            applied.set()
        return []


class DispatchStage(Stage):
    """TaskSubmitted -> the handler registered for its label, bounded in parallel; emits its status."""

    name = "scheduler"
    topics = STAGE_READS[name]

    def __init__(self, handlers: dict[str, TaskHandler], emit: Emit, *, parallel: int = 4) -> None:
        self.handlers = handlers
        self.emit = emit
        self._slots = asyncio.Semaphore(parallel)

    @staticmethod
    def _statuses(tasks: list[TaskSubmitted], status: str, **extra: Any) -> list[Event]:
        return [
            _status(t, task_id=t.task_id, cube_id=t.cube_id, label=t.label, key=t.key,
                    business_task_id=t.business_task_id, status=status, **extra)
            for t in tasks
        ]

    async def _run(self, tasks: list[TaskSubmitted]) -> list[Event]:
        label = tasks[0].label
        handler = self.handlers.get(label)
        if handler is None:
            return self._statuses(tasks, "failed", error=f"no handler registered for label {label!r}")
        async with self._slots:
            await self.emit(self._statuses(tasks, "in_progress"))
            try:
                result = await handler(tasks)
            except Exception as exc:  # noqa: BLE001 - a failing user handler fails its tasks, not the worker
                logger.warning("tasks failed label=%s count=%d error=%r", label, len(tasks), exc)
                return self._statuses(tasks, "failed", error=f"{type(exc).__name__}: {exc}")
        return self._statuses(tasks, "completed", result=result or {})

    async def handle(self, batch: Sequence[Envelope[AnyEvent]]) -> list[Event]:
        groups: dict[tuple[str, str, str], list[TaskSubmitted]] = {}
        for envelope in batch:
            event = envelope.event
            if isinstance(event, TaskSubmitted):
                groups.setdefault((event.user_id, event.cube_id, event.label), []).append(event)
        if not groups:
            return []
        results = await asyncio.gather(*(self._run(g) for g in groups.values()))
        return [event for group in results for event in group]
